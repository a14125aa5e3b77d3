"""The second unprivileged test user ($ORCA_USER2, no subuid either), which
the test user may become with `sudo -n -u` and nothing more: for tests that
share a cache between two real users."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import orca

SOURCE = Path(orca.__file__).resolve().parent.parent  # the second user runs the code under test


def as_user2(*cmd: str, **kw) -> subprocess.CompletedProcess:
    user2 = os.environ["ORCA_USER2"]  # set by tools/test; a missing second user is a failure
    return subprocess.run(["sudo", "-n", "-u", user2, *cmd], capture_output=True, text=True, **kw)


def orca_build_as_user2(home: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    """orca-build as the second user, with HOME `home` and nothing else of ours."""
    return as_user2("env", "-i", f"HOME={home}", f"PATH={Path(sys.executable).parent}:/usr/bin:/bin",
                    "PYTHONDONTWRITEBYTECODE=1", f"PYTHONPATH={SOURCE}", sys.executable, "-c",
                    "from orca.cli import main; main()", *args, **kw)


@contextlib.contextmanager
def shared_context(files: dict[str, str]):
    """A build context of these files in a 0755 directory the second user can read too."""
    c = Path(tempfile.mkdtemp(prefix="orca-ctx-"))
    try:
        for name, text in files.items():
            (c / name).write_text(text)
            (c / name).chmod(0o644)
        c.chmod(0o755)
        yield c
    finally:
        shutil.rmtree(c)
