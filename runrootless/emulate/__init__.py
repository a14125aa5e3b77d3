"""Syscall handlers of the emulation, one table keyed by x86_64 syscall number."""

from __future__ import annotations

from . import ids, mknod, owner, stat, xattr

TABLE = {**ids.HANDLERS, **owner.HANDLERS, **stat.HANDLERS, **mknod.HANDLERS, **xattr.HANDLERS}
