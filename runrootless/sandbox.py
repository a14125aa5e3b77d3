"""The container: a user namespace mapping only our uid/gid to 0, plus mount,
pid, uts, ipc (and optionally net) namespaces, the rootfs entered with pivot_root.

Process tree (host side first):
  runner (tracer)  ->  setup  (unshares, waits for init)
                       ->  init (pid 1: mounts, pivot_root, reaps, forwards signals)
                           ->  workload (seccomp filter, execve of process.args)

Inside a container whose runtime masks parts of /proc, a new procfs is
refused (procfs.py): /proc is then the existing one bound recursively, there
is no pid namespace, and init, a child subreaper, kills what the workload
left behind (reaper.py).  Settings that are not essential (hostname, /sys,
devpts, /dev/shm, the host's resolv.conf and hosts, loopback) degrade with a
note; an essential one that fails ends the setup with one line naming the
call, the errno and the setting that forbids it (refusals.py).
"""

from __future__ import annotations

import fcntl
import os
import resource
import signal
import socket
import stat as st
import struct
import tempfile
from dataclasses import dataclass, field

from umoci_py.errors import UmociError

from . import linux, notify, procfs, reaper, refusals, seccomp_filter
from .spec import Mount, RunSpec

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
HOST_FILES = ("/etc/resolv.conf", "/etc/hosts")
# init's parent-death signal without a pid namespace: caught, to kill what the workload left.
_ORPHANED = signal.SIGRTMIN


class SandboxError(UmociError):
    """The container could not be set up (namespaces, mounts, rootfs)."""


@dataclass
class Channels:
    """File descriptors the container side inherits from the runner."""

    errors: int                    # write end: one-line setup failure
    notes: int                     # write end: one line per setting that degraded
    output: int | None             # write end for stdout+stderr, None to inherit
    emulate: bool                  # the workload gets the seccomp filter
    stop_for_tracer: bool = False  # stop before anything else until the tracer has seized us
    trapped: list[int] = field(default_factory=list)     # calls for the ptrace tracer
    notified: list[int] = field(default_factory=list)    # calls for the notification listener
    notify_sock: int | None = None  # where the workload sends the notification listener
    user_filter: bytes | None = None  # second filter, for a workload started as a non-root user
    max_tasks: int = 0             # RLIMIT_NPROC inside the user namespace (0: unchanged)
    runner_pid: int = 0            # the container dies with it (most tasks are not traced)


class MountPoints:
    """Mount points missing from the rootfs, created for a run and removed after it.

    Removal restores the parent directory's times so a later repack sees no
    change.  A crash of the runner can leave them behind (empty files/dirs).
    """

    def __init__(self, rootfs: str):
        self.rootfs = rootfs
        self.created: list[tuple[str, os.stat_result]] = []
        self.scratch: list[str] = []

    def scratch_file(self, data: bytes) -> str:
        """A host file to bind into the container (removed with the mount points)."""
        fd, path = tempfile.mkstemp(prefix="runrootless-")
        self.scratch.append(path)
        # Readable by everyone, as the host file it stands for: mkstemp's 0600
        # would make it unreadable to a fake non-root user (whose DAC is emulated).
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return path

    def ensure(self, dest: str, directory: bool) -> bool:
        """Make rootfs+dest exist; False if a symlink is in the way (skip the mount)."""
        path = self.rootfs
        parts = [p for p in dest.split("/") if p and p != "."]
        if ".." in parts:
            raise SandboxError(f"{self.rootfs}: mount destination {dest} contains '..'")
        for i, part in enumerate(parts):
            parent, path = path, os.path.join(path, part)
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                parent_info = os.stat(parent)
                if directory or i < len(parts) - 1:
                    os.mkdir(path, 0o755)
                else:
                    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                self.created.append((path, parent_info))
                continue
            if st.S_ISLNK(info.st_mode):
                return False
        return True

    def cleanup(self) -> None:
        for path, parent_info in reversed(self.created):
            try:
                if os.path.isdir(path):
                    os.rmdir(path)
                elif os.path.getsize(path) == 0:
                    os.unlink(path)
                else:
                    continue
                os.utime(os.path.dirname(path), ns=(parent_info.st_atime_ns, parent_info.st_mtime_ns))
            except OSError:
                pass  # the container put something there: it is content now
        self.created.clear()
        for path in self.scratch:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self.scratch.clear()


def hosts_file(hostname: str, host_hosts: bytes, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """The host's hosts file, plus a line resolving the container's hostname if none does
    (BuildKit's RUN steps resolve theirs, buildkitsandbox, the same way), then the
    extra (name, address) lines (docker's --add-host)."""
    named = any(hostname.encode() in line.split(b"#")[0].split()[1:] for line in host_hosts.splitlines())
    sep = b"" if not host_hosts or host_hosts.endswith(b"\n") else b"\n"
    lines = [] if named else [f"127.0.0.1\t{hostname}"]
    lines += [f"{address}\t{name}" for name, address in extra]
    return host_hosts + (sep + "".join(line + "\n" for line in lines).encode() if lines else b"")


def prepare_mount_points(spec: RunSpec) -> tuple[MountPoints, list[tuple[str, str]], list[Mount]]:
    """Create what the mounts need; returns the (host file, destination) pairs and spec mounts to bind."""
    points = MountPoints(str(spec.rootfs))
    try:
        for d in ("proc", "sys", "dev"):
            points.ensure(d, directory=True)
        host_files = []
        for f in HOST_FILES:
            if os.path.exists(f) and points.ensure(f, directory=False):
                source = f
                if f == "/etc/hosts":
                    try:
                        with open(f, "rb") as fh:
                            host_hosts = fh.read()
                    except OSError:
                        continue   # optional, like the mount that would bind it
                    source = points.scratch_file(hosts_file(spec.hostname, host_hosts, spec.extra_hosts))
                host_files.append((source, f))
        mounts = []
        for m in spec.mounts:
            is_dir = m.type != "bind" or os.path.isdir(m.source)
            if points.ensure(m.destination, directory=is_dir):
                mounts.append(m)
    except OSError as err:
        points.cleanup()
        raise SandboxError(f"{spec.rootfs}: cannot create mount point: {err}") from None
    except SandboxError:
        points.cleanup()
        raise
    return points, host_files, mounts


def _fail(chans: Channels, message: str) -> None:
    _stop_for_tracer(chans)   # the tracer waits for that stop before anything else
    os.write(chans.errors, message.encode())
    os._exit(1)


def _note(chans: Channels, message: str) -> None:
    os.write(chans.notes, (message.replace("\n", " ") + "\n").encode())


def _optional(chans: Channels, what: str, call, *args) -> bool:
    """A setting the container can do without: on failure a note, not an error."""
    try:
        call(*args)
        return True
    except OSError as err:
        _note(chans, f"{what} skipped: {refusals.describe(err)}")
        return False


def _stop_for_tracer(chans: Channels) -> None:
    if chans.stop_for_tracer:
        chans.stop_for_tracer = False
        os.kill(os.getpid(), signal.SIGSTOP)   # until the tracer has seized it


def setup_main(spec: RunSpec, chans: Channels, host_files: list[tuple[str, str]], mounts: list[Mount],
               started: int) -> None:
    """The forked child: enter the namespaces, start init, exit with its status."""
    try:
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != chans.runner_pid:
            os._exit(1)   # the runner is already gone
        if chans.output is not None:
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(chans.output, 1)
            os.dup2(chans.output, 2)
        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        uid, gid = os.getuid(), os.getgid()
        try:
            linux.unshare(linux.CLONE_NEWUSER)
        except OSError as err:
            _fail(chans, f"unprivileged user namespaces are unavailable: {refusals.describe(err)}")
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            try:
                with open(f"/proc/self/{name}", "w") as fh:
                    fh.write(text)
            except OSError as err:
                raise linux.CallError(err.errno, f"write(/proc/self/{name}, {text!r})") from None
        if chans.max_tasks:
            _limit_tasks(chans.max_tasks)
        # Before the tracer's stop: the probe's processes are not the container's init.
        refused = procfs.refusal() if procfs.masked() else None
        _stop_for_tracer(chans)
        flags = linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC
        if refused is None:
            flags |= linux.CLONE_NEWPID
        else:
            _note(chans, f"/proc is masked by the container runtime ({refused}): the container shares the pid "
                         "namespace it runs in and sees its processes; every process it starts still ends with it")
        if spec.network == "none":
            flags |= linux.CLONE_NEWNET
        linux.unshare(flags)
        setup_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            os.close(started)
            init_main(spec, chans, host_files, mounts, setup_pid, own_pids=refused is None)
        os.write(started, str(pid).encode())
        os.close(started)
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
    except OSError as err:
        _fail(chans, f"container setup failed: {refusals.describe(err)}")
    except BaseException as err:  # noqa: BLE001 - a forked child must never return
        _fail(chans, f"container setup failed: {err}")


def _bind(source: str, target: str, readonly: bool, recursive: bool = True) -> None:
    linux.mount(source, target, None, linux.MS_BIND | (linux.MS_REC if recursive else 0))
    if readonly:
        # A remount in a user namespace must keep the flags locked on the source.
        locked = os.statvfs(target).f_flag & (linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
                                              | linux.MS_NOATIME | linux.MS_NODIRATIME)
        if os.statvfs(target).f_flag & 4096:  # ST_RELATIME
            locked |= linux.MS_RELATIME
        linux.mount(None, target, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | locked)


_MOUNT_FLAGS = {"ro": linux.MS_RDONLY, "nosuid": linux.MS_NOSUID, "nodev": linux.MS_NODEV,
                "noexec": linux.MS_NOEXEC, "noatime": linux.MS_NOATIME}


def _spec_mount(root: str, m: Mount) -> None:
    target = root + "/" + m.destination.lstrip("/")
    if m.type == "bind" or "bind" in m.options or "rbind" in m.options:
        _bind(m.source, target, readonly="ro" in m.options, recursive="bind" not in m.options)
        return
    flags = 0
    data = []
    for opt in m.options:
        if opt in _MOUNT_FLAGS:
            flags |= _MOUNT_FLAGS[opt]
        elif "=" in opt:
            data.append(opt)
    linux.mount(m.source or m.type, target, m.type, flags, ",".join(data) or None)


def _setup_dev(root: str, chans: Channels) -> None:
    dev = root + "/dev"
    linux.mount("tmpfs", dev, "tmpfs", linux.MS_NOSUID, "mode=755,size=65536k")
    for name in DEVICES:
        if os.path.exists(f"/dev/{name}"):
            os.close(os.open(f"{dev}/{name}", os.O_CREAT | os.O_WRONLY, 0o666))
            _bind(f"/dev/{name}", f"{dev}/{name}", readonly=False, recursive=False)
    os.mkdir(f"{dev}/pts", 0o755)
    _optional(chans, "/dev/pts", linux.mount, "devpts", f"{dev}/pts", "devpts", linux.MS_NOSUID | linux.MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=0620")
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    os.mkdir(f"{dev}/shm", 0o1777)
    _optional(chans, "/dev/shm", linux.mount, "shm", f"{dev}/shm", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
              "mode=1777,size=65536k")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")


def _loopback_up() -> None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            ifreq = struct.pack("16sH22x", b"lo", 0)
            flags = struct.unpack("16sH22x", fcntl.ioctl(sock, 0x8913, ifreq))[1]   # SIOCGIFFLAGS
            fcntl.ioctl(sock, 0x8914, struct.pack("16sH22x", b"lo", flags | 1))    # SIOCSIFFLAGS, IFF_UP
    except OSError as err:
        raise linux.CallError(err.errno, "ioctl(SIOCSIFFLAGS, lo up)") from None


def _orphaned(_sig, _frame) -> None:
    """init's parent died (the runner is gone): end everything, as a pid namespace would."""
    reaper.end_all()
    os._exit(128 + signal.SIGKILL)


def init_main(spec: RunSpec, chans: Channels, host_files: list[tuple[str, str]], mounts: list[Mount],
              setup_pid: int, own_pids: bool) -> None:
    """The container's init (pid 1 when own_pids): build the mount tree, start the workload, reap."""
    try:
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)   # with setup, which dies with the runner
        if not own_pids:
            signal.signal(_ORPHANED, _orphaned)
            linux.prctl(linux.PR_SET_PDEATHSIG, _ORPHANED)
            if os.getppid() != setup_pid:
                os._exit(1)   # setup is already gone
            reaper.adopt_orphans()
        root = str(spec.rootfs)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        linux.mount(root, root, None, linux.MS_BIND | linux.MS_REC)
        if own_pids:
            linux.mount("proc", root + "/proc", "proc", procfs.PROC_FLAGS)
        else:
            _bind("/proc", root + "/proc", readonly=False)   # with the runtime's masks, which are locked
        _optional(chans, "/sys", _bind, "/sys", root + "/sys", True)
        _setup_dev(root, chans)
        for source, dest in host_files:
            _optional(chans, dest, _bind, source, root + dest, True, False)
        for m in mounts:
            _spec_mount(root, m)
        os.chdir(root)
        linux.pivot_root(".", ".")
        linux.umount2(".", linux.MNT_DETACH)
        os.chdir("/")
        _optional(chans, f"hostname {spec.hostname}", linux.sethostname, spec.hostname)
        if spec.network == "none":
            _optional(chans, "the loopback interface", _loopback_up)
        try:
            os.chdir(spec.cwd)
        except OSError as err:
            _fail(chans, f"{spec.rootfs}: cannot enter working directory {spec.cwd}: {err.strerror}")
    except OSError as err:
        _fail(chans, f"{spec.rootfs}: container setup failed: {refusals.describe(err)}")

    workload: list[int] = []

    def forward(sig, _frame):
        if workload:
            os.kill(workload[0], sig)

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
    pid = os.fork()
    if pid == 0:
        workload_main(spec, chans)
    workload.append(pid)
    while True:
        done, status = os.waitpid(-1, 0)
        if done == pid:
            if not own_pids:
                reaper.end_all()
            os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def _limit_tasks(limit: int) -> None:
    """Fork bombs end in EAGAIN: RLIMIT_NPROC, set after the user namespace exists.

    Since Linux 5.14 the count is kept per user namespace: it covers the
    tasks (threads and unreaped zombies included) of this container only,
    while the namespace keeps the caller's own limit for the host side.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    limit = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))


def _install_filter(chans: Channels) -> None:
    if not chans.notified:
        seccomp_filter.install(chans.trapped)
        return
    try:
        listener = seccomp_filter.install(chans.trapped, chans.notified)
    except OSError as err:
        _fail(chans, f"seccomp user notification is unavailable (it needs Linux 5.5; runrootless run "
                     f"--no-notify, api.run(notify=False) do without): {err.strerror}")
    notify.send_listener(chans.notify_sock, listener)


def home_of(uid: int) -> str:
    """HOME for a process whose environment sets none: the user's passwd entry, else / (as runc)."""
    try:
        with open("/etc/passwd", "rb") as fh:
            for line in fh:
                fields = line.rstrip(b"\n").split(b":")
                if len(fields) >= 6 and fields[2] == str(uid).encode():
                    return os.fsdecode(fields[5]) or "/"
    except OSError:
        pass
    return "/"


def workload_main(spec: RunSpec, chans: Channels) -> None:
    try:
        for sig in (*FORWARDED_SIGNALS, signal.SIGPIPE, signal.SIGXFSZ, _ORPHANED):
            signal.signal(sig, signal.SIG_DFL)
        if chans.emulate:
            _install_filter(chans)
            if chans.user_filter is not None:
                seccomp_filter.install_program(chans.user_filter)
        env = dict(e.split("=", 1) for e in spec.env if "=" in e)
        if "HOME" not in env:
            env["HOME"] = home_of(spec.uid)
        os.close(chans.errors)
        os.close(chans.notes)
        os.execvpe(spec.args[0], spec.args, env)
    except OSError as err:
        os.write(2, f"runrootless: exec {spec.args[0]}: {err.strerror}\n".encode())
        os._exit(127)
    except BaseException as err:  # noqa: BLE001 - a forked child must never return
        os.write(2, f"runrootless: {err}\n".encode())
        os._exit(127)
