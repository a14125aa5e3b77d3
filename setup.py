"""Builds the one piece of C: runrootless's listener pre-filter (everything else is in pyproject.toml).

It is a plain shared object that prefilter.py loads with ctypes (no Python
API), built as an extension so that pip compiles it with the package.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("runrootless._prefilter", ["runrootless/_prefilter.c"],
                             extra_compile_args=["-O2", "-Wall", "-Wextra"])])
