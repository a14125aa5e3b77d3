"""RUN --mount: one function per mount type, each turning the parsed flag
(orca.dockerfile.instructions.Mount) into a RunMount, the part of the step's
cache key it adds and how to set it up around the step."""

from __future__ import annotations

import fcntl
import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from umoci_py import rootless, securejoin
from umoci_py.unpriv import remove_tree

from orca import copy as cp
from orca.cache import CacheStore
from orca.dockerfile.instructions import Mount
from orca.errors import BuildError

# BuildKit mounts shebang heredocs at /dev/pipes/<name>; runrootless builds
# /dev as a fresh tmpfs before the spec mounts and cannot make mount points
# inside it, so the scripts go to /run/pipes instead.
PIPES = "/run/pipes"
SSH_AGENT_DIR = "/run/buildkit"

# prepare(rootfs) -> (the sandbox's Mount or None, undo)
Prepare = Callable[[Path], tuple[object, Callable[[], None]]]


def _noop() -> None:
    pass


def _nothing(_rootfs: Path):
    return None, _noop


@dataclass(frozen=True)
class RunMount:
    key: dict                              # what counts for the step's cache key
    prepare: Prepare = _nothing            # called with the step's rootfs, before it runs
    env: tuple[str, str] | None = None     # a variable the step's process gets


@dataclass(frozen=True)
class MountSite:
    """What the mounts of one RUN need from the build."""
    where: str                             # file:line, for errors
    workdir: str                           # the step's WORKDIR, for relative targets
    workroot: Path                         # the build's scratch directory
    context: Path
    excluded: Callable
    secrets: dict[str, Path] = field(default_factory=dict)
    ssh: dict[str, Path] = field(default_factory=dict)   # --ssh: agent sockets by id
    cache: CacheStore | None = None
    # (directory, cache identity) of a stage's or image's filesystem
    source_root: Callable[[str, str], tuple[Path, str]] | None = None
    digests: object = None                 # the context's mtree.DigestCache: unchanged files are not re-read


def _sandbox_mount(source: str, target: str, kind: str, options: tuple):
    """A runrootless Mount, its module imported only once a step runs."""
    from runrootless.spec import Mount as SandboxMount
    return SandboxMount(source, target, kind, options)


def _holder(site: MountSite) -> Path:
    return Path(tempfile.mkdtemp(dir=site.workroot))


def run_mounts(parsed: list[Mount], site: MountSite, env: dict[str, str]) -> list[RunMount]:
    """The RunMounts of one RUN's expanded --mount flags.  As BuildKit's LLB
    does, ssh mounts without a target get /run/buildkit/ssh_agent.N, N
    counting the RUN's ssh mounts, and the first one is SSH_AUTH_SOCK unless
    the environment has it."""
    out = []
    n = 0
    for m in parsed:
        if m.type == "ssh":
            if not m.target:
                m = replace(m, target=f"{SSH_AGENT_DIR}/ssh_agent.{n}")
            n += 1
        mount = run_mount(m, site)
        if m.type == "ssh" and n == 1 and "SSH_AUTH_SOCK" not in env:
            mount = replace(mount, env=("SSH_AUTH_SOCK", mount.key["target"]))
        out.append(mount)
    return out


def run_mount(m: Mount, site: MountSite) -> RunMount:
    """The RunMount of one expanded --mount flag."""
    target = m.target or ""
    if target and not target.startswith("/"):
        target = posixpath.join(site.workdir or "/", target)
    target = posixpath.normpath(target) if target else target
    kind = MOUNT_KINDS.get(m.type)
    if kind is None:
        raise BuildError(f"{site.where}: RUN --mount=type={m.type} is not supported")
    return kind(m, target, site)


def secret_mount(m: Mount, target: str, site: MountSite) -> RunMount:
    """A --secret's bytes as a read-only file (mode, uid and gid as asked,
    0400 root by default) and/or an environment variable."""
    sid = m.id or m.source or posixpath.basename(target)
    target = target or f"/run/secrets/{sid}"
    path = site.secrets.get(sid)
    if path is None:
        if m.required:
            raise BuildError(f"{site.where}: secret {sid!r} required but not provided (--secret id={sid},src=PATH)")
        return RunMount({"type": "secret", "id": sid})
    data = Path(path).read_bytes()
    mode = m.mode if m.mode is not None else 0o400
    owner = (m.uid or 0, m.gid or 0)
    key = {"type": "secret", "id": sid, "target": target, "env": m.env,
           "mode": mode, "uid": owner[0], "gid": owner[1]}
    env = (m.env, data.decode()) if m.env else None
    if m.env and not m.target:
        return RunMount(key, env=env)

    def prepare(rootfs: Path):
        holder = _holder(site)
        f = holder / "secret"
        f.write_bytes(data)
        cp.set_owner(f, owner)
        os.chmod(f, mode)
        undo_point = cp.mount_point(rootfs, target, is_dir=False)

        def undo():
            undo_point()
            remove_tree(holder)
        return _sandbox_mount(str(f), target, "bind", ("rbind", "ro")), undo
    return RunMount(key, prepare, env)


def tmpfs_mount(m: Mount, target: str, site: MountSite) -> RunMount:
    return RunMount({"type": "tmpfs", "target": target},
                    lambda rootfs: (_sandbox_mount("tmpfs", target, "tmpfs", ("rw",)),
                                    cp.mount_point(rootfs, target)))


def cache_mount(m: Mount, target: str, site: MountSite) -> RunMount:
    """A directory of the cache dir kept across builds; `locked` waits for it,
    `private` takes a fresh directory when another step holds it."""
    cid = m.id or target
    sharing = m.sharing or "shared"

    def prepare(rootfs: Path):
        d = site.cache.mount_dir(cid)
        fd = None
        if sharing in ("locked", "private"):
            fd = os.open(d, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if sharing == "private" else 0))
            except BlockingIOError:
                os.close(fd)
                fd = None
                d = _holder(site)
        # uid/gid/mode apply to the cache directory itself, as BuildKit's do.
        os.chmod(d, m.mode if m.mode is not None else 0o755)
        cp.set_owner(d, (m.uid or 0, m.gid or 0))
        undo_point = cp.mount_point(rootfs, target)

        def undo():
            undo_point()
            if fd is not None:
                os.close(fd)
        return _sandbox_mount(str(d), target, "bind", ("rbind", "rw")), undo
    return RunMount({"type": "cache", "target": target, "sharing": sharing,
                     "uid": m.uid, "gid": m.gid, "mode": m.mode}, prepare)


def bind_mount(m: Mount, target: str, site: MountSite) -> RunMount:
    """Part of the context, a stage or an image; keyed by its content."""
    src_path = m.source or "/"
    from_ = m.from_
    readonly = m.readonly
    if from_:
        root, identity = site.source_root(from_, site.where)
        sources = cp.select(root, [src_path], f"{site.where}: RUN --mount", cp._never)
    else:
        root = site.context
        sources = cp.select(root, [src_path], f"{site.where}: RUN --mount", site.excluded)
        identity = cp.content_digest(root, sources, site.excluded, digests=site.digests)
    host = root / sources[0].rel

    def prepare(rootfs: Path):
        source = host
        holder = None
        if not readonly or not from_:
            # a writable bind must not change its source, and the
            # context view must not show ignored files: use a copy
            holder = _holder(site)
            source = holder / "src"
            if host.is_dir():
                source.mkdir()
                cp.copy_sources(root, sources, source, "/", True, cp.CopyOptions(keep_owner=True),
                                cp._never if from_ else site.excluded)
            else:
                shutil.copy2(host, source)
        undo_point = cp.mount_point(rootfs, target, is_dir=host.is_dir())

        def undo():
            undo_point()
            if holder is not None:
                remove_tree(holder)
        return _sandbox_mount(str(source), target, "bind", ("rbind", "ro" if readonly else "rw")), undo
    return RunMount({"type": "bind", "target": target, "source": src_path, "rw": not readonly,
                     "content": identity}, prepare)


def ssh_mount(m: Mount, target: str, site: MountSite) -> RunMount:
    """The --ssh agent of the mount's id, relayed through a socket of the
    build's own (orca.sshforward); neither that socket nor the agent's path
    reaches the cache key or the rootfs.  A socket cannot carry the owner
    xattr: uid and gid go into its mount point's directory's side record
    (umoci_py.rootless) for the step, and that record is put back after it."""
    sid = m.id or "default"
    mode = m.mode if m.mode is not None else 0o600
    key = {"type": "ssh", "id": sid, "target": target, "required": m.required,
           "mode": mode, "uid": m.uid or 0, "gid": m.gid or 0}
    upstream = site.ssh.get(sid)
    if upstream is None:
        if m.required:
            raise BuildError(f"{site.where}: ssh agent {sid!r} required but not provided (--ssh {sid}=SOCKET)")
        return RunMount(key)

    def prepare(rootfs: Path):
        from orca.sshforward import AgentForward
        holder = _holder(site)
        forward = AgentForward(holder / "agent.sock", upstream, mode)
        undo_point = cp.mount_point(rootfs, target, is_dir=False)
        parent = securejoin.join(rootfs, posixpath.dirname(target))
        saved = _side_records(parent)
        rootless.write_side(parent, posixpath.basename(target), os.stat(forward.path).st_ino,
                            (m.uid or 0, m.gid or 0))

        def undo():
            forward.close()
            rootless.put_xattr(parent, rootless.OWNERS_XATTR, saved)
            undo_point()
            remove_tree(holder)
        return _sandbox_mount(str(forward.path), target, "bind", ("bind",)), undo
    return RunMount(key, prepare)


def _side_records(directory: Path) -> bytes | None:
    try:
        return os.getxattr(directory, rootless.OWNERS_XATTR)
    except OSError:
        return None


MOUNT_KINDS: dict[str, Callable[[Mount, str, MountSite], RunMount]] = {
    "secret": secret_mount,
    "tmpfs": tmpfs_mount,
    "cache": cache_mount,
    "bind": bind_mount,
    "ssh": ssh_mount,
}


def shm_mount(size: int):
    """--shm-size: a /dev/shm of that many bytes over the sandbox's own."""
    return _sandbox_mount("shm", "/dev/shm", "tmpfs", ("nosuid", "nodev", "mode=1777", f"size={size}"))


def script_mount(script, workroot: Path) -> RunMount:
    """A shebang heredoc: a 0755 file mounted read-only at PIPES/<name>."""
    target = f"{PIPES}/{script.name}"

    def prepare(_rootfs: Path):
        holder = Path(tempfile.mkdtemp(dir=workroot))
        (holder / script.name).write_text(script.content)
        os.chmod(holder / script.name, 0o755)
        return _sandbox_mount(str(holder / script.name), target, "bind", ("bind", "ro")), \
            lambda: remove_tree(holder)
    return RunMount({"type": "script", "name": script.name, "content": script.content}, prepare)
