"""The oracle suite's package sets and the manifest of an image's file tree.

A manifest records, per path, what a root-built image and ours must agree on:
type, mode with the set-id bits, owner and group by number and by name (names
from the image's own /etc/passwd and /etc/group), symlink target and the
security.capability bytes; plus the installed packages from dpkg's status.
It is read from layer tars only (whiteouts applied), so it is what the image
carries, whoever unpacks it.

Run as a script (by tools/make-oracles, as root, with the system python and
no project imports): ``oracle_manifest.py sets`` prints "NAME PKG,PKG..." per
set; ``oracle_manifest.py manifest TAR`` prints a tar's manifest as JSON.
"""

from __future__ import annotations

import json
import posixpath
import sys
import tarfile
from dataclasses import asdict, dataclass
from typing import BinaryIO, Iterable

# Packages whose maintainer scripts create users and groups, chown, set
# set-id bits (directly or with dpkg-statoverride) or file capabilities,
# grouped into few sets to keep the builds few.
SETS: dict[str, tuple[str, ...]] = {
    # sshd user and privilege separation dir, setuid sudo, messagebus and the
    # setuid D-Bus launch helper, ping's cap_net_raw, the uuidd user.
    "login": ("openssh-server", "sudo", "dbus", "iputils-ping", "uuid-runtime"),
    # crontab group and setgid crontab, daemon-owned at spools with setuid at,
    # _chrony, man-owned caches, Debian-exim with its setuid binary, www-data dirs.
    "daemons": ("cron", "at", "chrony", "man-db", "exim4-daemon-light", "nginx"),
    # postgres user, ssl-cert group and key, a cluster made by dropping privileges.
    "postgresql": ("postgresql",),
}

CAPABILITY = "SCHILY.xattr.security.capability"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True)
class Entry:
    type: str          # file, dir, symlink, char, block, fifo
    mode: str          # octal, set-id and sticky bits included
    uid: int
    gid: int
    user: str          # name of uid in the image's /etc/passwd ("" if none)
    group: str         # name of gid in the image's /etc/group
    link: str          # symlink target ("" otherwise)
    caps: str          # security.capability as hex ("" without)


_TYPES = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir",
          tarfile.SYMTYPE: "symlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block",
          tarfile.FIFOTYPE: "fifo"}


def _path(name: str) -> str:
    return posixpath.normpath("/" + name)


class _Tree:
    """Layers applied in order: tar headers by path, and the files names come from."""

    WANTED = {"/etc/passwd", "/etc/group", "/var/lib/dpkg/status"}

    def __init__(self) -> None:
        self.headers: dict[str, tarfile.TarInfo] = {}
        self.data: dict[str, bytes] = {}

    def remove(self, path: str, keep_self: bool) -> None:
        prefix = path.rstrip("/") + "/"
        for p in [p for p in self.headers if p.startswith(prefix) or (p == path and not keep_self)]:
            del self.headers[p]
            self.data.pop(p, None)

    def layer(self, tar: tarfile.TarFile) -> None:
        for ti in tar:
            path = _path(ti.name)
            parent, base = posixpath.split(path)
            if base == OPAQUE:
                self.remove(parent, keep_self=True)
            elif base.startswith(WHITEOUT):
                self.remove(posixpath.join(parent, base[len(WHITEOUT):]), keep_self=False)
            else:
                old = self.headers.get(path)
                if old is not None and old.isdir() and not ti.isdir():
                    self.remove(path, keep_self=True)
                self.headers[path] = ti
                if path in self.WANTED and ti.isreg():
                    self.data[path] = tar.extractfile(ti).read()
                elif path in self.WANTED and ti.islnk():
                    self.data[path] = self.data.get(_path(ti.linkname), b"")

    def names(self, path: str) -> dict[int, str]:
        out = {}
        for line in self.data.get(path, b"").decode("utf-8", "replace").splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[2].isdigit():
                out.setdefault(int(fields[2]), fields[0])
        return out

    def packages(self) -> dict[str, str]:
        """Installed packages (name[:arch] -> version) from dpkg's status."""
        out = {}
        for stanza in self.data.get("/var/lib/dpkg/status", b"").decode("utf-8", "replace").split("\n\n"):
            fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
            if fields.get("Status") == "install ok installed":
                arch = fields.get("Architecture", "")
                name = fields["Package"] + (f":{arch}" if fields.get("Multi-Arch") == "same" else "")
                out[name] = fields.get("Version", "")
        return out

    def manifest(self) -> dict:
        users, groups = self.names("/etc/passwd"), self.names("/etc/group")
        paths = {}
        for path, ti in self.headers.items():
            # A hard link is the file it links to: same inode, same metadata.
            target = self.headers.get(_path(ti.linkname)) if ti.islnk() else ti
            if target is None:
                raise ValueError(f"{path}: hard link to missing {ti.linkname}")
            caps = target.pax_headers.get(CAPABILITY)
            paths[path] = Entry(
                type=_TYPES.get(target.type, f"tar type {target.type!r}"),
                mode=f"{target.mode & 0o7777:04o}", uid=target.uid, gid=target.gid,
                user=users.get(target.uid, ""), group=groups.get(target.gid, ""),
                link=target.linkname if target.issym() else "",
                caps=caps.encode("utf-8", "surrogateescape").hex() if caps is not None else "")
        return {"paths": {p: asdict(e) for p, e in sorted(paths.items())}, "packages": self.packages()}


def manifest_of_layers(streams: Iterable[BinaryIO]) -> dict:
    """The manifest of the image whose uncompressed layer tars are streams, bottom first."""
    tree = _Tree()
    for stream in streams:
        with tarfile.open(fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape") as tar:
            tree.layer(tar)
    return tree.manifest()


def main(argv: list[str]) -> int:
    if argv == ["sets"]:
        for name, packages in SETS.items():
            print(name, ",".join(packages))
        return 0
    if len(argv) == 2 and argv[0] == "manifest":
        with open(argv[1], "rb") as stream:
            json.dump(manifest_of_layers([stream]), sys.stdout, indent=0, sort_keys=True)
        return 0
    print("usage: oracle_manifest.py sets | manifest TAR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
