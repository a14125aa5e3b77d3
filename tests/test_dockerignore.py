""".dockerignore reading and matching (notes §1.13)."""

import pytest

from orca.dockerfile.ignore import Matcher, choose_ignore_file, clean, parse, read
from orca.errors import IgnoreFileError, OrcaError


@pytest.mark.parametrize("text, patterns", [
    ("\ufeffa\n", ["a"]),
    ("# comment\n  # not a comment\n", ["# not a comment"]),
    ("  a  \n\n\t\n", ["a"]),
    ("/a\n./a\na/\na//b/../c\n", ["a", "a", "a", "a/c"]),
    ("!b\n! /c/\n", ["!b", "!c"]),
    ("/\n", ["/"]),
    ("a\r\nb\r\n", ["a", "b"]),
])
def test_read(text, patterns):
    assert read(text) == patterns


@pytest.mark.parametrize("path, expected", [
    ("", "."), ("//a", "/a"), ("a/./b/", "a/b"), ("a/../../b", "../b"), ("/../a", "/a"),
])
def test_clean(path, expected):
    assert clean(path) == expected


CASES = [
    # pattern, path, excluded
    ("*.md", "a.md", True),
    ("*.md", "docs/a.md", False),          # * never crosses /
    ("*/*.md", "docs/a.md", True),
    ("?.txt", "a.txt", True),
    ("?.txt", "ab.txt", False),
    ("a?b", "a/b", False),                 # ? never matches /
    ("[ab].c", "b.c", True),
    ("[ab].c", "c.c", False),
    ("[^ab].c", "c.c", True),
    ("[a-c]x", "bx", True),
    ("\\*.c", "*.c", True),
    ("\\*.c", "a.c", False),
    ("a.c", "abc", False),                 # . is literal
    ("a+(b)", "a+(b)", True),
    ("**/node_modules", "node_modules", True),     # zero segments
    ("**/node_modules", "a/b/node_modules", True),
    ("**/node_modules", "a/node_modules/x/y", True),  # parent dir matches
    ("**/*.go", "main.go", True),
    ("**/*.go", "cmd/x/main.go", True),
    ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True),
    ("a/**/b", "a/x/y/c", False),
    ("docs/**", "docs/x/y", True),
    ("docs/**", "docs", False),
    ("**", "anything/at/all", True),
    ("build", "build/out/bin", True),      # parent dir matches
    ("build", "src/build", False),
    ("src/*/gen", "src/a/gen/x.c", True),
    ("/abs/path", "abs/path", True),
]


@pytest.mark.parametrize("pattern, path, excluded", CASES)
def test_match(pattern, path, excluded):
    assert parse(pattern + "\n").matches(path) is excluded


def test_last_match_wins():
    matcher = parse("*.md\n!README.md\ndocs\n!docs/keep\n*.md\n")
    assert matcher.matches("a.md")
    assert matcher.matches("README.md")         # the final *.md excludes it again
    assert matcher.matches("docs/x")
    assert not matcher.matches("docs/keep")
    assert not matcher.matches("docs/keep/inner")
    assert not matcher.matches("src/main.c")
    assert matcher.has_exclusions


def test_exception_reincludes():
    matcher = parse("*\n!src\n!Dockerfile\n")
    assert matcher.matches("README")
    assert not matcher.matches("src/a/b.c")
    assert not matcher.matches("Dockerfile")
    assert not parse("a\n").has_exclusions


@pytest.mark.parametrize("text, message", [
    ("!\n", '.dockerignore:1: illegal exclusion pattern: "!"'),
    ("ok\n#c\n ! \n", '.dockerignore:3: illegal exclusion pattern: "!"'),
    ("a[\n", ".dockerignore:1: syntax error in pattern 'a[': unclosed ["),
    ("a[]\n", ".dockerignore:1: syntax error in pattern 'a[]': unclosed ["),
    ("a\\\n", ".dockerignore:1: syntax error in pattern 'a\\\\': trailing \\"),
])
def test_errors(text, message):
    with pytest.raises(IgnoreFileError) as info:
        parse(text)
    assert str(info.value) == message
    assert isinstance(info.value, OrcaError)


def test_error_names_source():
    with pytest.raises(IgnoreFileError) as info:
        Matcher(["ok", "!"], "app.Dockerfile.dockerignore")
    assert str(info.value) == 'app.Dockerfile.dockerignore: illegal exclusion pattern: "!"'
    with pytest.raises(IgnoreFileError) as info:
        read("ok\n[\n", "ctx/.dockerignore")
    assert str(info.value) == "ctx/.dockerignore:2: syntax error in pattern '[': unclosed ["


@pytest.mark.parametrize("dockerfile, names, chosen", [
    ("Dockerfile", {"Dockerfile", ".dockerignore"}, ".dockerignore"),
    ("app.Dockerfile", {"app.Dockerfile.dockerignore", ".dockerignore"}, "app.Dockerfile.dockerignore"),
    ("app.Dockerfile", {".dockerignore"}, ".dockerignore"),
    ("Dockerfile", {"src"}, None),
    ("build/app.Dockerfile", {"build/app.Dockerfile.dockerignore"}, "build/app.Dockerfile.dockerignore"),
])
def test_choose_ignore_file(dockerfile, names, chosen):
    assert choose_ignore_file(dockerfile, names) == chosen


def test_caret_is_literal_outside_class():
    assert parse("a^b*\n").matches("a^bc")
