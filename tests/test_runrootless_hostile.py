"""runrootless under a hostile tracee: other syscall entries, confusing paths and fds,
fork bombs, thousands of threads, kills mid-syscall and signals to the runner.

The tracee is tests/test_runrootless_hostile.c, built static with the host gcc
and run in a busybox bundle as the unprivileged test user.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_dir import FIXTURES
from runrootless import api, seccomp_filter
from runrootless.emulate import TABLE, USER_ONLY, ids, user
from runrootless.spec import DEFAULT_MAX_TASKS
from runrootless_helpers import assert_no_children
from umoci_py.rootless import XATTR_NAME, decode_owner, encode_owner
from umoci_py_helpers import umoci_unpack

ENOSYS = -errno.ENOSYS
# Arguments that make every call in the sweep fail harmlessly should it run:
# a bad pointer, fd -1, id -1 (no change).
BAD = ["0xffffffff"] * 6


@pytest.fixture(scope="module")
def hostile_bin(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "hostile"
    src = Path(__file__).with_suffix(".c")
    subprocess.run(["gcc", "-O1", "-static", "-pthread", "-o", str(out), str(src)], check=True)
    return out


@pytest.fixture(scope="module")
def busybox_bundle(tmp_path_factory) -> Path:
    bundle = tmp_path_factory.mktemp("rrh") / "bundle"
    umoci_unpack(FIXTURES / "busybox", "latest", bundle)
    return bundle


@pytest.fixture
def bundle(busybox_bundle, hostile_bin, tmp_path) -> Path:
    dest = tmp_path / "bundle"
    subprocess.run(["cp", "-a", str(busybox_bundle), str(dest)], check=True)
    shutil.copy(hostile_bin, dest / "rootfs/bin/hostile")
    return dest


def run(bundle, args, **kw):
    spec = api.spec_from_bundle(bundle)
    spec.args = list(args)
    for key, value in kw.items():
        setattr(spec, key, value)
    chunks, stats = [], api.Stats()
    status = api.run(spec, output=chunks.append, stats=stats)
    return status, b"".join(chunks).decode(), stats


def calls(*groups):
    """argv for `hostile call`: each group is (abi, nr, *args)."""
    argv = ["/bin/hostile", "call"]
    for group in groups:
        argv += [*map(str, group), "--"]
    return argv


def results(out):
    return [int(line) if line.lstrip("-").isdigit() else line for line in out.splitlines()]


def seen(stats, nr):
    return stats.by_nr[nr] + stats.notified[nr]


# ---- every emulated call, through every entry point -------------------------

@pytest.mark.parametrize("uid, x86_64, i386", [
    (0, sorted(set(TABLE) - USER_ONLY), seccomp_filter.I386_EMULATED),
    (1000, sorted(TABLE), seccomp_filter.I386_EMULATED + user.I386),
], ids=["root", "user"])
def test_emulated_calls_never_reach_the_kernel_unemulated(bundle, uid, x86_64, i386):
    """x86_64 entries stop for the tracer (or its notification helper); the i386
    (int 0x80) and x32 entries of the same calls get ENOSYS, while an
    unemulated i386 call (getpid) still works: the refusal is the filter's."""
    groups = [("x86_64", nr, *BAD) for nr in x86_64]
    groups += [("i386", nr, *BAD) for nr in i386]
    groups += [("x32", nr, *BAD) for nr in x86_64]
    groups += [("i386", 20), ("x86_64", 39)]     # getpid both ways
    status, base_out, base = run(bundle, calls(("x86_64", 39)), uid=uid, gid=uid)
    assert status == 0, base_out
    status, out, stats = run(bundle, calls(*groups), uid=uid, gid=uid)
    assert status == 0, out
    got = results(out)
    assert len(got) == len(groups)
    # Calls trapped only for some arguments (getsockopt: SO_PEERCRED) run with these.
    conditional = set(ids.USER_FILTER_ONLY_IF)
    assert [nr for nr in x86_64 if seen(stats, nr) <= seen(base, nr) and nr not in conditional] == []
    assert stats.handler_errors == 0
    refused = got[len(x86_64):-2]
    assert refused == [ENOSYS] * (len(i386) + len(x86_64))
    assert got[-2] == got[-1] > 1


def test_i386_and_x32_calls_with_real_arguments_change_nothing(bundle):
    """Calls that would succeed if they reached the kernel: chown (ctime), mknod,
    set/remove/get xattr of the owner record, stat, setuid."""
    rootfs = bundle / "rootfs"
    target = rootfs / "tmp/f"
    target.write_bytes(b"x")
    os.setxattr(target, XATTR_NAME, encode_owner(42, 43))
    before = os.stat(target)
    f, fifo, name, text = "s:/tmp/f", "s:/tmp/fifo", f"s:{XATTR_NAME}", "s:forged"
    fifo_mode = 0o10644
    i386 = [(212, f, 0, 0), (182, f, 0, 0), (198, f, 0, 0), (16, f, 0, 0), (207, "fd:/tmp/f", 0, 0),
            (95, "fd:/tmp/f", 0, 0), (298, -100, f, 0, 0, 0), (14, fifo, fifo_mode, 0),
            (297, -100, fifo, fifo_mode, 0), (226, f, name, text, 6, 0), (235, f, name),
            (229, f, name, "buf:64", 64), (232, f, "buf:256", 256), (195, f, "buf:144"),
            (300, -100, f, "buf:144", 0), (383, -100, f, 0, 0xFFF, "buf:256"),
            (213, 0), (23, 0), (208, 0, 0, 0), (206, 0, 0), (199,), (24,)]
    x32 = [(92, f, 0, 0), (94, f, 0, 0), (93, "fd:/tmp/f", 0, 0), (260, -100, f, 0, 0, 0),
           (133, fifo, fifo_mode, 0), (259, -100, fifo, fifo_mode, 0), (188, f, name, text, 6, 0),
           (197, f, name), (191, f, name, "buf:64", 64), (194, f, "buf:256", 256), (4, f, "buf:144"),
           (262, -100, f, "buf:144", 0), (332, -100, f, 0, 0xFFF, "buf:256"), (105, 0),
           (117, 0, 0, 0), (116, 0, 0), (102,)]
    status, out, _ = run(bundle, calls(*[("i386", *c) for c in i386], *[("x32", *c) for c in x32]))
    assert status == 0, out
    assert results(out) == [ENOSYS] * (len(i386) + len(x32))
    after = os.stat(target)
    assert (after.st_ctime_ns, after.st_mode) == (before.st_ctime_ns, before.st_mode)
    assert decode_owner(os.getxattr(target, XATTR_NAME)) == (42, 43)
    assert not (rootfs / "tmp/fifo").exists()


def test_io_uring_is_refused_so_its_ops_cannot_bypass_the_trap(bundle):
    # io_uring_setup(1, &params): a ring could statx/openat/setxattr with no syscall to trap.
    status, out, _ = run(bundle, calls(("x86_64", 425, 1, "buf:120"), ("i386", 425, 1, "buf:120")))
    assert (status, results(out)) == (0, [ENOSYS, ENOSYS])


# ---- paths and fds in the tracee's view -------------------------------------

def test_paths_and_fds_resolve_in_the_tracees_view(bundle, tmp_path, monkeypatch):
    rootfs = bundle / "rootfs"
    for rel in ("f", "tmp/f", "tmp/d/g", "tmp/d/g2", "tmp/jail/f"):
        (rootfs / rel).parent.mkdir(parents=True, exist_ok=True)
        (rootfs / rel).write_bytes(b"")
    # A relative path that exists only in the tracer's cwd, an fd number the tracer has open.
    tracer_cwd = tmp_path / "tracer-cwd"
    tracer_cwd.mkdir()
    (tracer_cwd / "only-here").write_bytes(b"")
    monkeypatch.chdir(tracer_cwd)
    canary = tmp_path / "canary"
    canary.write_bytes(b"")
    fd = os.open(canary, os.O_RDONLY)
    try:
        status, out, _ = run(bundle, calls(
            ("x86_64", 92, "s:only-here", 7, 7),                     # chown: ENOENT in the tracee's /
            ("x86_64", 80, "s:/tmp/d"), ("x86_64", 92, "s:g", 42, 43),            # chdir, chown
            ("x86_64", 260, "fd:/tmp/d", "s:g2", 44, 45, 0),                      # fchownat(dirfd)
            ("x86_64", 33, "fd:/tmp/f", fd), ("x86_64", 93, fd, 46, 47), ("fstat", fd),  # dup2, fchown
            ("x86_64", 161, "s:/tmp/jail"), ("x86_64", 80, "s:/"),                # chroot, chdir
            ("x86_64", 92, "s:/f", 48, 49), ("stat", "/f")))
        canary_xattrs = os.listxattr(canary)
    finally:
        os.close(fd)
    assert status == 0, out
    assert results(out) == [-errno.ENOENT, 0, 0, 0, fd, 0, "46:47", 0, 0, 0, "48:49"]
    owners = {rel: decode_owner(os.getxattr(rootfs / rel, XATTR_NAME))
              for rel in ("tmp/d/g", "tmp/d/g2", "tmp/f", "tmp/jail/f")}
    assert owners == {"tmp/d/g": (42, 43), "tmp/d/g2": (44, 45), "tmp/f": (46, 47), "tmp/jail/f": (48, 49)}
    assert XATTR_NAME not in os.listxattr(rootfs / "f")
    assert canary_xattrs == [] and os.listxattr(tracer_cwd / "only-here") == []
    assert not (rootfs / "only-here").exists()


def test_corrupt_owner_record_reads_as_none_and_chown_replaces_it(bundle):
    bad = bundle / "rootfs/tmp/bad"
    bad.write_bytes(b"")
    os.setxattr(bad, XATTR_NAME, b"\x0f")       # wire type 7: not a Resource message
    status, out, stats = run(bundle, calls(("stat", "/tmp/bad"), ("x86_64", 92, "s:/tmp/bad", 5, 6),
                                           ("stat", "/tmp/bad")))
    assert (status, results(out), stats.handler_errors) == (0, ["0:0", 0, "5:6"], 0)
    assert decode_owner(os.getxattr(bad, XATTR_NAME)) == (5, 6)


# ---- bounded process and thread counts --------------------------------------

@pytest.mark.parametrize("kind", ["forks", "zombies", "threads"])
def test_fork_and_clone_fail_with_eagain_past_max_tasks(bundle, kind):
    """The tasks of the container (setup, init, the workload) plus its children, threads or
    unreaped zombies reach max_tasks, then fork/clone return EAGAIN; once the
    zombies are reaped, forks work again."""
    limit = 40
    status, out, stats = run(bundle, ["/bin/hostile", kind], max_tasks=limit)
    assert status == 0, out
    lines = out.splitlines()
    assert lines[0] == f"{kind} {limit - 3} errno {errno.EAGAIN}"
    assert lines[1:] == ([] if kind == "threads" else ["again ok"]) + [f"reaped {limit - 3}"]
    assert_no_children()


def test_shell_forking_past_the_bundles_pids_limit_gets_eagain(bundle):
    config = json.loads((bundle / "config.json").read_text())
    config.setdefault("linux", {}).setdefault("resources", {})["pids"] = {"limit": 30}
    config["process"]["args"] = ["/bin/sh", "-c", "i=0; while [ $i -lt 100 ]; do sleep 1000 & i=$((i+1)); done"]
    (bundle / "config.json").write_text(json.dumps(config))
    spec = api.spec_from_bundle(bundle)
    assert spec.max_tasks == 30 and api.RunSpec(Path("/"), [], []).max_tasks == DEFAULT_MAX_TASKS
    chunks, stats = [], api.Stats()
    status = api.run(spec, output=chunks.append, stats=stats)
    assert status == 2      # ash stops at the first failed fork
    assert "can't fork: Resource temporarily unavailable" in b"".join(chunks).decode()
    assert_no_children()


def test_two_thousand_threads_alive_at_once(bundle):
    status, out, stats = run(bundle, ["/bin/hostile", "manythreads", "2000"])
    assert (status, out) == (0, "threads 2000 joined 2000 uid0 2000\n")
    assert seen(stats, 102) >= 2000
    assert_no_children()


# ---- kills and signals ------------------------------------------------------

def test_processes_killed_while_their_threads_are_in_trapped_calls(bundle):
    status, out, stats = run(bundle, ["/bin/hostile", "killstorm", "40"])
    assert (status, out) == (0, "killed 40\n")
    assert seen(stats, 92) >= 40 * 5
    # The tracer is unharmed: the next run works.
    assert run(bundle, calls(("x86_64", 102)))[:2] == (0, "0\n")
    assert_no_children()


RUNNER = r"""
import ctypes, json, os, signal, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)          # PR_SET_CHILD_SUBREAPER: orphans come to us
cli, sig = json.loads(sys.argv[1]), int(sys.argv[2])
proc = subprocess.Popen(cli, stdout=subprocess.PIPE)
ready = proc.stdout.readline()

def descendants(pid):
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            for child in map(int, fh.read().split()):
                out += [child, *descendants(child)]
    return out

family = descendants(proc.pid)
os.kill(proc.pid, sig)
status = proc.wait()
adopted = []
while True:                                      # blocks while any descendant still runs
    try:
        adopted.append(os.waitpid(-1, 0)[0])
    except ChildProcessError:
        break
print(json.dumps({"ready": ready.decode(), "family": family, "status": status, "adopted": adopted,
                  "left": [p for p in family if os.path.exists(f"/proc/{p}")]}))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL],
                         ids=lambda s: signal.Signals(s).name)
def test_signal_to_the_runner(bundle, tmp_path, sig):
    """TERM/INT/HUP reach the workload, the runner exits 128+signal having reaped
    everything; SIGKILL of the runner kills every tracee (PTRACE_O_EXITKILL) and
    the notification helper follows: nothing is left running."""
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["args"] = ["/bin/sh", "-c", "sleep 1000 & sleep 1000 & echo ready; wait"]
    (bundle / "config.json").write_text(json.dumps(config))
    cli = [str(Path(sys.executable).parent / "runrootless"), "run", "-b", str(bundle),
           "--root", str(tmp_path / "state"), "c1"]
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(cli), str(int(sig))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ready"] == "ready\n"
    assert len(report["family"]) >= 5     # setup, helper, init, sh, two sleeps
    assert report["left"] == []
    if sig == signal.SIGKILL:
        assert report["status"] == -signal.SIGKILL
        assert report["adopted"]           # orphans, all ended rather than left running
    else:
        assert report["status"] == 128 + sig
        assert report["adopted"] == []     # the runner reaped its whole tree itself
