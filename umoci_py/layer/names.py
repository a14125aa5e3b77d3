"""The names a layer tar gives a meaning beyond tar's: whiteouts, the
xattrs we keep records in, and where an entry's name lands.  Shared by
extraction, generation and the overlay format (kept apart from extract.py,
whose import a commit that only writes a layer need not pay)."""

from __future__ import annotations

import posixpath

# Never extracted nor packed (umoci's specialXattrs).
FORBIDDEN_XATTRS = frozenset({"security.selinux", "system.nfs4_acl"})
# Our marker on a device placeholder: "c 1 3" / "b 8 0".  Written by extract
# and by runrootless' mknod emulation; read by generate to restore the node.
DEVICE_XATTR = "user.orca.device"
PAX_XATTR = "SCHILY.xattr."
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


def clean(name: str) -> str:
    """Tar entry name -> path relative to the root, '..' clamped at the root."""
    return posixpath.normpath("/" + name).lstrip("/")
