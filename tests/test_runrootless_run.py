"""runrootless end to end, as the unprivileged test user with no subuid range."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runrootless import api
from runrootless_helpers import assert_no_children, host_owner, run_sh
from umoci_py_helpers import top_layer, umoci_py

STRESS_C = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void *worker(void *arg) {
    struct stat st;
    for (int i = 0; i < 50; i++) {
        if (stat("/etc/shadow", &st) != 0 || st.st_gid != 42) { puts("thread stat"); exit(1); }
        if (getuid() != (uid_t)(long)arg) { puts("thread uid"); exit(1); }
    }
    return NULL;
}

static int threads(long uid) {
    pthread_t t[16];
    for (int i = 0; i < 16; i++) pthread_create(&t[i], NULL, worker, (void *)uid);
    for (int i = 0; i < 16; i++) pthread_join(t[i], NULL);
    return 0;
}

int main(void) {
    for (int i = 0; i < 300; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            struct stat st;
            _exit(getuid() == 0 && stat("/etc/shadow", &st) == 0 && st.st_gid == 42 ? 0 : 1);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid || status != 0) { puts("fork child"); return 1; }
    }
    threads(0);
    long r;
    /* i386 getuid32 through int 0x80: refused by the filter, never unemulated */
    __asm__ volatile ("int $0x80" : "=a"(r) : "a"(199) : "memory");
    if (r != -38) { printf("i386 getuid32 -> %ld\n", r); return 1; }
    if (setresuid(1000, 1000, 1000) != 0) { puts("setresuid"); return 1; }
    threads(1000);   /* new threads inherit the fake ids */
    puts("stress ok");
    return 7;
}
"""

XATTR_C = r"""
#include <errno.h>
#include <stdio.h>
#include <sys/xattr.h>

int main(int argc, char **argv) {
    char buf[256];
    int get = getxattr(argv[1], "user.rootlesscontainers", buf, sizeof buf) < 0 ? errno : 0;
    ssize_t list = listxattr(argv[1], buf, sizeof buf);
    int set = setxattr(argv[1], "user.rootlesscontainers", "x", 1, 0) < 0 ? errno : 0;
    printf("get %d list %zd set %d\n", get, list, set);
    return 0;
}
"""


def repacked_layer(bundle: Path, layout_ro: Path, tmp_path: Path) -> dict:
    """Repack the bundle with umoci-py into a private copy of its layout; the new layer's members by path."""
    layout = tmp_path / "layout"
    shutil.copytree(layout_ro, layout)
    umoci_py("repack", "--image", f"{layout}:after", bundle)
    return top_layer(layout, "after")


def test_exit_status_output_and_identity(debian_bundle):
    status, out = run_sh(debian_bundle, "id -u; stat -c %U:%G /etc/shadow; hostname; echo err >&2; exit 7",
                         hostname="box")
    assert status == 7
    assert out.splitlines() == ["0", "root:shadow", "box", "err"]
    assert_no_children()


def test_stat_family_answered_by_the_notification_helper(debian_bundle):
    info = os.stat(debian_bundle / "rootfs/etc/shadow")
    spec = api.spec_from_bundle(debian_bundle)
    perl = ('@s = stat(STDIN); print "$s[4]:$s[5] $s[7] $s[1]\\n"; '
            '@s = lstat("/etc/shadow"); print "$s[5]\\n"')
    spec.args = ["/bin/sh", "-c", "find /etc/shadow -printf '%u:%g %s %i\\n'; "
                 f"perl -e '{perl}' < /etc/shadow; find /etc/passwd /tmp -printf '%U:%G\\n'"]
    chunks, stats = [], api.Stats()
    assert api.run(spec, output=chunks.append, stats=stats) == 0
    assert b"".join(chunks).decode().splitlines() == [
        f"root:shadow {info.st_size} {info.st_ino}", f"0:42 {info.st_size} {info.st_ino}", "42", "0:0", "0:0"]
    assert stats.notified[262] >= 4 and 262 not in stats.by_nr
    # With notify=False the same answers come from ptrace stops.
    chunks, stats = [], api.Stats()
    assert api.run(spec, output=chunks.append, stats=stats, notify=False) == 0
    assert b"".join(chunks).decode().splitlines()[1] == f"0:42 {info.st_size} {info.st_ino}"
    assert stats.by_nr[262] >= 4 and not stats.notified


def test_killed_workload_reports_128_plus_signal(debian_bundle):
    status, _ = run_sh(debian_bundle, "kill -9 $$")
    assert status == 128 + signal.SIGKILL
    assert_no_children()


def test_setpriv_and_configured_user(debian_bundle):
    status, out = run_sh(debian_bundle, "setpriv --reuid=nobody id -u; id -un; id -G; "
                         "setpriv --reuid=nobody --regid=nogroup --clear-groups id")
    assert status == 0 and out.splitlines()[0] == "65534"
    assert out.splitlines()[-1] == "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)"
    status, out = run_sh(debian_bundle, "id -u; id -g; id -G", uid=1000, gid=100, additional_gids=(27,))
    assert (status, out.split()) == (0, ["1000", "100", "100", "27"])


@pytest.mark.parametrize("notify", [True, False], ids=["notify", "ptrace"])
def test_set_id_executables_raise_effective_ids(private_bundle, notify):
    # Both ways: under user notification (an untraced root is seized at the execve of a
    # set-id file) and with notify=False (the bits apply at the program's first trapped call,
    # also when it is exec'd straight from a shell that has made none).
    script = ("cp /usr/bin/id /tmp/gid && chown 0:8 /tmp/gid && chmod 2755 /tmp/gid && "
              "cp /usr/bin/id /tmp/uid && chown 65534:0 /tmp/uid && chmod 4755 /tmp/uid && "
              "cp /usr/bin/id /tmp/root && chmod 4755 /tmp/root && "
              "/tmp/gid -g; /tmp/gid -rg; /tmp/uid -u; sh -c 'exec /tmp/gid -g'; "
              "setpriv --reuid=nobody /tmp/gid -g; setpriv --reuid=nobody /tmp/root -u")
    status, out = run_sh(private_bundle, script, notify=notify)
    assert (status, out.split()) == (0, ["8", "0", "65534", "8", "8", "0"])


def test_mknod_chown_and_hidden_xattr(private_bundle, debian_layout_ro, tmp_path):
    script = ("mknod /tmp/c c 1 3 && touch /tmp/f && chown 42:43 /tmp/f && chown 44 /tmp/f && "
              "ls -ln /tmp/f | cut -d' ' -f3,4 && chgrp 5 /tmp && stat -c %g /tmp")
    status, out = run_sh(private_bundle, script)
    assert status == 0, out
    assert out.split() == ["44", "43", "5"]
    rootfs = private_bundle / "rootfs"
    assert os.getxattr(rootfs / "tmp/c", "user.orca.device") == b"c 1 3"
    assert (rootfs / "tmp/c").stat().st_size == 0
    assert host_owner(rootfs / "tmp/f") == (44, 43)
    # umoci-py repack turns the placeholder back into the device node.
    layer = repacked_layer(private_bundle, debian_layout_ro, tmp_path)
    dev = layer["tmp/c"]
    assert dev.ischr() and (dev.devmajor, dev.devminor) == (1, 3)
    assert (layer["tmp/f"].uid, layer["tmp/f"].gid) == (44, 43)
    # The container can neither see nor forge the ownership record.
    probe = tmp_path / "probe.c"
    probe.write_text(XATTR_C)
    subprocess.run(["gcc", "-static", "-o", str(rootfs / "usr/local/bin/probe"), str(probe)], check=True)
    status, out = run_sh(private_bundle, "/usr/local/bin/probe /tmp/f")
    assert (status, out) == (0, "get 61 list 0 set 1\n")


def test_no_traces_left_in_rootfs(private_bundle):
    rootfs = private_bundle / "rootfs"
    assert not (rootfs / "etc/hosts").exists()
    before = (rootfs / "etc").stat().st_mtime_ns
    status, out = run_sh(private_bundle, "test -s /etc/hosts && ls /dev/pts/ptmx /dev/null >/dev/null && echo ok")
    assert (status, out) == (0, "ok\n")
    assert not (rootfs / "etc/hosts").exists()
    assert (rootfs / "etc").stat().st_mtime_ns == before


def test_network_none_has_only_loopback(debian_bundle):
    status, out = run_sh(debian_bundle, "tail -n +3 /proc/net/dev | cut -d: -f1", network="none")
    assert (status, out.split()) == (0, ["lo"])
    status, out = run_sh(debian_bundle, "tail -n +3 /proc/net/dev | cut -d: -f1")
    assert status == 0 and len(out.split()) > 1    # host network by default


def test_forks_threads_i386_and_exit_7(private_bundle, tmp_path):
    binary = private_bundle / "rootfs/usr/local/bin/stress"
    src = tmp_path / "stress.c"
    src.write_text(STRESS_C)
    subprocess.run(["gcc", "-O1", "-static", "-pthread", "-o", str(binary), str(src)], check=True)
    spec = api.spec_from_bundle(private_bundle)
    spec.args = ["/usr/local/bin/stress"]
    chunks = []
    stats = api.Stats()
    assert api.run(spec, output=chunks.append, stats=stats) == 7
    assert b"".join(chunks) == b"stress ok\n"
    assert stats.trapped + sum(stats.notified.values()) > 300 * 2
    assert_no_children()


def test_tracee_killed_in_a_syscall_storm(debian_bundle):
    script = ("(while :; do stat /etc/shadow >/dev/null; chown -h 0:0 /tmp; done) & "
              "p=$!; i=0; while [ $i -lt 30 ]; do id -u >/dev/null; i=$((i+1)); done; kill -9 $p; wait $p; echo $?")
    status, out = run_sh(debian_bundle, script)
    assert status == 0 and out.split()[-1] == "137"
    assert_no_children()


def test_signal_to_runner_is_forwarded_to_the_container(debian_bundle, tmp_path):
    script = f"""
import sys, threading, os, signal
sys.path[:0] = {sys.path!r}
from runrootless import api
spec = api.spec_from_bundle({str(debian_bundle)!r})
spec.args = ["/bin/sh", "-c", "trap 'exit 42' TERM; echo ready; while :; do sleep 0.1; done"]
def out(data):
    if b"ready" in data:
        os.kill(os.getpid(), signal.SIGTERM)
print(api.run(spec, output=out))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "42", proc.stderr


def test_cli_run_bundle_pid_file_and_errors(private_bundle, tmp_path):
    config = json.loads((private_bundle / "config.json").read_text())
    config["process"]["args"] = ["/bin/sh", "-c", "echo $$; exit 3"]
    (private_bundle / "config.json").write_text(json.dumps(config))
    cli = [str(Path(sys.executable).parent / "runrootless")]
    pid_file = tmp_path / "pid"
    proc = subprocess.run([*cli, "run", "-b", str(private_bundle), "--root", str(tmp_path / "state"),
                           "--pid-file", str(pid_file), "c1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert proc.stdout == "2\n"       # pid 1 is the container's init, the process is its child
    assert int(pid_file.read_text()) > 1
    assert list((tmp_path / "state").iterdir()) == []
    proc = subprocess.run([*cli, "run", "-b", str(tmp_path), "c2"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr == f"runrootless: {tmp_path}/config.json: no such file (not a runtime bundle?)\n"
    # --no-notify: the all-ptrace mode gives the same run.
    proc = subprocess.run([*cli, "run", "-b", str(private_bundle), "--root", str(tmp_path / "state"),
                           "--no-notify", "c3"], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (3, "2\n")


def test_missing_command_exits_127(debian_bundle):
    spec = api.spec_from_bundle(debian_bundle)
    spec.args = ["no-such-command"]
    chunks = []
    assert api.run(spec, output=chunks.append) == 127
    assert b"no-such-command" in b"".join(chunks)


APT = "apt-get update -q && apt-get install -y -q cron"


@pytest.mark.slow
def test_apt_install_cron_with_emulation(private_bundle, debian_layout_ro, tmp_path):
    status, out = run_sh(private_bundle, APT + " && stat -c %U:%G /var/spool/cron/crontabs /usr/bin/crontab")
    assert status == 0, out[-3000:]
    assert "chown" not in out and "unsandboxed" not in out and "E: " not in out
    assert out.split()[-2:] == ["root:crontab", "root:crontab"]
    rootfs = private_bundle / "rootfs"
    group = {l.split(":")[0]: int(l.split(":")[2]) for l in (rootfs / "etc/group").read_text().splitlines()}
    for path in ("var/spool/cron/crontabs", "usr/bin/crontab"):
        uid, gid = host_owner(rootfs / path)
        assert gid == group["crontab"] and uid in (0, 0xFFFFFFFF)
    assert (rootfs / "usr/bin/crontab").stat().st_mode & 0o2000
    # What umoci-py repack puts into the layer's tar headers.
    layer = repacked_layer(private_bundle, debian_layout_ro, tmp_path)
    spool, crontab = layer["var/spool/cron/crontabs"], layer["usr/bin/crontab"]
    assert (spool.uid, spool.gid) == (0, group["crontab"])
    assert (crontab.uid, crontab.gid) == (0, group["crontab"]) and crontab.mode & 0o2000


@pytest.mark.slow
def test_apt_install_fails_without_emulation(private_bundle):
    status, out = run_sh(private_bundle, APT, emulate=False)
    assert status != 0
    assert "setgroups" in out or "Invalid argument" in out


def test_deeply_nested_config_is_a_one_line_error(tmp_path):
    (tmp_path / "config.json").write_text("[" * 100000 + "]" * 100000)
    runner = Path(sys.executable).parent / "runrootless"
    proc = subprocess.run([str(runner), "run", "-b", str(tmp_path), "x"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "nested too deeply" in proc.stderr
