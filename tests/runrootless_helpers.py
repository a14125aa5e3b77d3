"""Helpers shared by the runrootless tests: run a shell script in a bundle, read recorded owners."""

from __future__ import annotations

import os

from runrootless import api
from umoci_py.rootless import XATTR_NAME, resolve_owner


def run_sh(bundle, script, notify=True, stats=None, **kw):
    """(exit status, merged output) of /bin/sh -c script in the bundle; kw sets RunSpec fields."""
    spec = api.spec_from_bundle(bundle)
    spec.args = ["/bin/sh", "-c", script]
    for key, value in kw.items():
        setattr(spec, key, value)
    chunks = []
    status = api.run(spec, output=chunks.append, notify=notify, stats=stats)
    return status, b"".join(chunks).decode()


def host_owner(path):
    """The owner recorded in a file's user.rootlesscontainers (an unset id is 0), None without one."""
    try:
        return resolve_owner(os.getxattr(path, XATTR_NAME))
    except OSError:
        return None
