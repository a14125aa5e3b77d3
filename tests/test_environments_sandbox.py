"""The sandbox where a container runtime restricts it, on the host: a /proc with
masks (as runtimes mount it) makes a new procfs impossible, and a seccomp
filter refuses calls.  Both are made here without privilege: masks in a user
and mount namespace of the test's own, the filter with libseccomp.  The
podman environments themselves are in test_environments_podman.py."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from umoci_py_helpers import umoci_py

BIN = Path(sys.executable).parent
# As runtimes mask /proc/keys (and /proc/kcore, /proc/timer_list...): /dev/null over it.
MASKED = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
          'mount --bind /dev/null /proc/keys && exec "$@"', "sh"]
NOTE = "runrootless: note: /proc is masked by the container runtime"


def refusing(*calls: str) -> list[str]:
    """A command prefix: a seccomp filter of libseccomp's refusing these calls with EPERM (as a
    runtime's profile would), and unshare/clone with CLONE_NEWUSER when 'userns' is asked."""
    script = f"""
import os, sys, seccomp
f = seccomp.SyscallFilter(seccomp.ALLOW)
for name in {[c for c in calls if c != "userns"]!r}:
    f.add_rule(seccomp.ERRNO({errno.EPERM}), name)
if {"userns" in calls!r}:
    f.add_rule(seccomp.ERRNO({errno.EPERM}), "unshare")
    f.add_rule(seccomp.ERRNO({errno.EPERM}), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, 0x10000000, 0x10000000))
    f.add_rule(seccomp.ERRNO({errno.ENOSYS}), "clone3")
f.load()
os.execvp(sys.argv[1], sys.argv[1:])
"""
    return ["/usr/bin/python3", "-c", script]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, busybox_layout_ro) -> Path:
    """busybox unpacked; each test sets the process it runs."""
    bundle = tmp_path_factory.mktemp("env") / "bundle"
    umoci_py("unpack", "--rootless", "--image", f"{busybox_layout_ro}:latest", bundle)
    return bundle


def set_process(bundle: Path, script: str, hostname: str = "umoci-default", uid: int = 0) -> None:
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["args"] = ["sh", "-c", script]
    config["process"]["user"] = {"uid": uid, "gid": uid}
    config["process"]["terminal"] = False
    config["hostname"] = hostname
    (bundle / "config.json").write_text(json.dumps(config))


def run(bundle: Path, *prefix: str, name: str = "c", flags=()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, str(BIN / "runrootless"), "run", *flags, "-b", str(bundle), "--root",
                           str(bundle.parent / "state"), name], capture_output=True, text=True, timeout=120)


def alive(pid: int) -> bool:
    """A process that has not exited (a zombie has: /proc/PID/stat says Z)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] != b"Z"


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_unmasked_proc_keeps_the_pid_namespace_and_notes_nothing(bundle):
    set_process(bundle, "echo $$; exit 3")
    proc = run(bundle)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "2\n", "")


def test_masked_proc_shares_the_pid_namespace_and_says_so_once(bundle):
    set_process(bundle, "echo $$; readlink /proc/self; hostname; exit 3")
    proc = run(bundle, *MASKED)
    assert proc.returncode == 3, proc.stderr
    pid, self_link, hostname = proc.stdout.split()
    assert int(pid) > 2 and self_link.isdigit()   # the bound /proc agrees with getpid's pid namespace
    assert hostname == "umoci-default"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(NOTE), proc.stderr
    assert "mount(proc on /proc): EPERM" in lines[0]


@pytest.mark.parametrize("flags, uid", [((), 0), (("--no-notify",), 0), ((), 1000)],
                         ids=["notify", "ptrace", "as-user"])
def test_masked_proc_ends_every_process_the_workload_started(bundle, flags, uid):
    # A daemon in its own session, an orphan, and a background child still running at exit.
    set_process(bundle, "(setsid sleep 1000 & echo $!); (sleep 1000 & echo $!) ; sleep 1000 & echo $!; exit 5",
                uid=uid)
    proc = run(bundle, *MASKED, flags=flags)
    assert proc.returncode == 5, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 3
    assert [p for p in pids if alive(p)] == []


def test_masked_proc_exit_statuses_and_signals_as_before(bundle):
    set_process(bundle, "kill -9 $$")
    assert run(bundle, *MASKED).returncode == 137
    set_process(bundle, "trap 'exit 42' TERM; echo ready; while :; do sleep 0.1; done")
    runner = subprocess.Popen([*MASKED, str(BIN / "runrootless"), "run", "-b", str(bundle), "--root",
                               str(bundle.parent / "state"), "sig"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert runner.stdout.readline() == b"ready\n"
    runner.send_signal(signal.SIGTERM)   # unshare execs: this is the runner
    assert runner.wait(timeout=60) == 42


def test_masked_proc_runner_killed_takes_everything_with_it(bundle, tmp_path):
    set_process(bundle, "setsid sleep 1000 & echo $!; sleep 1000 & echo $!; wait")
    runner = subprocess.Popen([*MASKED, str(BIN / "runrootless"), "run", "-b", str(bundle), "--root",
                               str(tmp_path / "state"), "kill"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pids = [int(runner.stdout.readline()), int(runner.stdout.readline())]
    runner.kill()
    runner.wait(timeout=60)
    deadline = time.monotonic() + 30   # init's parent-death signal ends them: wait for that, bounded
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in pids if alive(p)] == []


def test_hostname_is_resolved_by_the_mounted_hosts_file(bundle):
    set_process(bundle, "hostname; grep -w \"$(hostname)\" /etc/hosts", hostname="box-7")
    proc = run(bundle)
    assert proc.returncode == 0, proc.stderr
    host_lines = Path("/etc/hosts").read_text().splitlines()
    assert proc.stdout.splitlines() == ["box-7", "127.0.0.1\tbox-7"]
    assert "box-7" not in "\n".join(host_lines)   # the host's own file is untouched


def test_refused_sethostname_keeps_the_inherited_name_with_a_note(bundle):
    set_process(bundle, "hostname", hostname="box-8")
    proc = run(bundle, *refusing("sethostname"))
    assert (proc.returncode, proc.stdout) == (0, f"{os.uname().nodename}\n"), proc.stderr
    assert proc.stderr.startswith("runrootless: note: hostname box-8 skipped: sethostname(box-8): EPERM "
                                  "(Operation not permitted): the container's seccomp profile blocks it")
    assert len(proc.stderr.splitlines()) == 1


def test_refused_user_namespace_is_one_line_naming_call_errno_and_setting(bundle):
    set_process(bundle, "echo never")
    line = one_line_error(run(bundle, *refusing("userns")))
    assert line.startswith("runrootless: unprivileged user namespaces are unavailable: "
                               "unshare(CLONE_NEWUSER): EPERM (Operation not permitted): "
                               "the container's seccomp profile blocks user namespaces")
    assert "seccomp=unconfined" in line and "Unconfined" in line


def test_refused_essential_mount_is_one_line(bundle):
    set_process(bundle, "echo never")
    line = one_line_error(run(bundle, *refusing("pivot_root")))
    assert "container setup failed: pivot_root(., .): EPERM (Operation not permitted): the container's " \
           "seccomp profile blocks it" in line


def orca_build(tmp_path: Path, base: Path, dockerfile: str, *prefix: str) -> subprocess.CompletedProcess:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile.replace("BASE", f"oci:{base}"))
    return subprocess.run([*prefix, str(BIN / "orca-build"), "--progress", "plain", "--layout", str(tmp_path / "out"),
                           "--cache-dir", str(tmp_path / "cache"), str(ctx)],
                          capture_output=True, text=True, timeout=300)


def test_masked_proc_in_a_build_is_noted_once_and_run_steps_resolve_their_hostname(tmp_path, busybox_layout_ro):
    proc = orca_build(tmp_path, busybox_layout_ro, "FROM BASE:latest\nRUN hostname; grep -w \"$(hostname)\" /etc/hosts\n"
                      "RUN sleep 1000 & echo $!; setsid sleep 1000 & echo $!\n", *MASKED)
    assert proc.returncode == 0, proc.stderr
    log = proc.stderr.splitlines()
    assert "#1 buildkitsandbox" in log and "#1 127.0.0.1\tbuildkitsandbox" in log
    assert [line for line in log if line.startswith("note: ")] == [
        "note: /proc is masked by the container runtime (mount(proc on /proc): EPERM (Operation not permitted)): "
        "the container shares the pid namespace it runs in and sees its processes; every process it starts "
        "still ends with it"]
    pids = [int(line.split()[1]) for line in log if line.startswith("#2 ") and line.split()[1].isdigit()]
    assert len(pids) == 2 and [p for p in pids if alive(p)] == []


@pytest.mark.slow
def test_run_steps_hostname_resolves_through_the_c_library(tmp_path, debian_layout_ro):
    proc = orca_build(tmp_path, debian_layout_ro, "FROM BASE:bookworm\nRUN getent hosts \"$(hostname)\"\n")
    assert proc.returncode == 0, proc.stderr
    assert "#1 127.0.0.1       buildkitsandbox" in proc.stderr.splitlines()
