"""A file that appears whole or not at all: the one temp-then-rename writer.

The bytes go to a temporary file in the same directory (or in tmp_dir, on
the same file system), are fsynced (unless asked not to), get their mode, and the file is renamed
over the target: a reader, or whoever looks after a crash or a kill, sees the
old file or the new one, never a part.  The layout's index.json and the
files `orca-build -o` writes both go through here.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: int, prefix: str | None = None, tmp_dir: str | os.PathLike | None = None,
                sync: bool = True):
    """A binary file object to write; on a clean exit it replaces path,
    with mode (fsynced first unless sync is False: the layout's files follow
    umoci, which syncs none).  On an error the temporary file is removed and
    path is untouched."""
    path = Path(path)
    where = tmp_dir if tmp_dir is not None else (path.parent if str(path.parent) else ".")
    fd, tmp = tempfile.mkstemp(prefix=prefix if prefix is not None else f".{path.name}.", suffix=".tmp", dir=where)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
