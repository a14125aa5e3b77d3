"""A file's bytes copied into a new file in the kernel: the one way orca
copies file data (COPY and ADD from the context, the fallback's copies of
snapshots).

A reflink (FICLONE) where the filesystem shares extents (btrfs, xfs), else
copy_file_range (the same filesystem, or one the kernel may copy across),
else sendfile, else read and write, when the source's filesystem has no
sendfile either.  The first way that works is remembered per pair of
devices, so each later file goes straight to it.
"""

from __future__ import annotations

import errno
import fcntl
import os

# linux/fs.h: FICLONE = _IOW(0x94, 9, int), the dst fd shares the src fd's extents
FICLONE = 0x40049409
# What a filesystem (or a pair of them) answers when it cannot clone or copy this way
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EBADF)
_methods: dict[tuple[int, int], str] = {}  # (src dev, dst dev) -> the first way that worked


def copy_data(fin: int, fout: int, size: int, devs: tuple[int, int]) -> None:
    """The size bytes of fin, from its start, into the empty file fout
    (devs: their st_dev)."""
    method = _methods.get(devs, "clone")
    if method == "clone":
        try:
            fcntl.ioctl(fout, FICLONE, fin)
            _methods[devs] = "clone"
            return
        except OSError as err:
            if err.errno not in _UNSUPPORTED:
                raise
            method = "copy_file_range"
    done = 0
    if method == "copy_file_range":
        try:
            while done < size:
                done += os.copy_file_range(fin, fout, size - done, done, done) or size  # 0: the source shrank
            _methods[devs] = method
            return
        except OSError as err:
            if err.errno not in _UNSUPPORTED or done:
                raise
            method = "sendfile"
    if method == "sendfile":
        try:
            while done < size:
                done += os.sendfile(fout, fin, done, size - done) or size
            _methods[devs] = method
            return
        except OSError as err:
            if err.errno not in _UNSUPPORTED or done:
                raise
    _methods[devs] = "read"
    os.lseek(fout, 0, os.SEEK_SET)
    while done < size:
        chunk = os.pread(fin, min(size - done, 1 << 20), done)
        if not chunk:
            break
        done += os.write(fout, chunk)
