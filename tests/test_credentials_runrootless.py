"""Fake credentials under runrootless follow the kernel's rules in every transition (issue 13).

Each idiom real packages use to change ids is run in a Debian container;
what the id calls report and the owners recorded for files created after
the transition (xattr, side record, then the repacked layer's tar headers)
are checked.  The fixture image has no Python: os.setreuid/os.setresuid are
the setreuid/setresuid calls, made here from a small C program (idseq).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from runrootless import api
from runrootless_helpers import host_owner, private_copy, run_sh
from umoci_py.rootless import read_side, side_owner
from umoci_py_helpers import top_layer, umoci_py

pytestmark = pytest.mark.slow

APP = 1234
USERS = 100

# Each pair of arguments is one operation, run in order through the raw
# syscall (per thread, as the kernel sees it); an error is printed and the
# next operation runs.  "exec PROG ARGS..." ends the list.
IDSEQ_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *op = argv[i], *a = argv[i + 1];
        long v[3] = {-1, -1, -1}, r = 0;
        sscanf(a, "%ld,%ld,%ld", &v[0], &v[1], &v[2]);
        if (!strcmp(op, "reuid")) r = syscall(SYS_setreuid, v[0], v[1]);
        else if (!strcmp(op, "resuid")) r = syscall(SYS_setresuid, v[0], v[1], v[2]);
        else if (!strcmp(op, "regid")) r = syscall(SYS_setregid, v[0], v[1]);
        else if (!strcmp(op, "resgid")) r = syscall(SYS_setresgid, v[0], v[1], v[2]);
        else if (!strcmp(op, "uid")) r = syscall(SYS_setuid, v[0]);
        else if (!strcmp(op, "gid")) r = syscall(SYS_setgid, v[0]);
        else if (!strcmp(op, "fsuid")) syscall(SYS_setfsuid, v[0]);
        else if (!strcmp(op, "groups")) { gid_t g[1] = {v[0]}; r = syscall(SYS_setgroups, 1, g); }
        else if (!strcmp(op, "touch")) { int fd = open(a, O_CREAT | O_WRONLY, 0644); r = fd < 0 ? -1 : close(fd); }
        else if (!strcmp(op, "mkdir")) r = mkdir(a, 0755);
        else if (!strcmp(op, "i386creat")) {   /* creat through int 0x80: a path below 4 GiB */
            static char path[256];
            snprintf(path, sizeof path, "%s", a);
            __asm__ volatile ("int $0x80" : "=a"(r) : "a"(8), "b"(path), "c"(0644) : "memory");
            if (r < 0) { errno = -r; r = -1; } else close(r);
        }
        else if (!strcmp(op, "show")) {
            uid_t ru, eu, su; gid_t rg, eg, sg;
            syscall(SYS_getresuid, &ru, &eu, &su);
            syscall(SYS_getresgid, &rg, &eg, &sg);
            printf("%u %u %u %u %u %u\n", ru, eu, su, rg, eg, sg);
        } else if (!strcmp(op, "exec")) { fflush(stdout); execv(a, argv + i + 1); r = -1; }
        else { printf("bad op %s\n", op); return 2; }
        if (r < 0) printf("%s %s: %s\n", op, a, strerror(errno));
        fflush(stdout);
    }
    return 0;
}
"""

# Three threads of one process switch ids one by one, by the raw syscall (glibc's
# setresuid would switch them all).
THREADS_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_barrier_t step;

static void make(const char *path) { int fd = open(path, O_CREAT | O_WRONLY, 0644); if (fd >= 0) close(fd); }
static void report(const char *who) { printf("%s %ld %ld\n", who, syscall(SYS_getuid), syscall(SYS_getegid)); fflush(stdout); }

static void *first(void *arg) {
    syscall(SYS_setresgid, 1001, 1001, 1001);
    syscall(SYS_setresuid, 1001, 1001, 1001);
    make("/tmp/t/a1"); report("a");
    pthread_barrier_wait(&step);
    pthread_barrier_wait(&step);
    make("/tmp/t/a2"); report("a");
    return arg;
}

static void *second(void *arg) {
    pthread_barrier_wait(&step);
    make("/tmp/t/b0"); report("b");
    syscall(SYS_setresgid, 1002, 1002, 1002);
    syscall(SYS_setresuid, 1002, 1002, 1002);
    make("/tmp/t/b1"); report("b");
    pthread_barrier_wait(&step);
    return arg;
}

int main(void) {
    pthread_t a, b;
    pthread_barrier_init(&step, NULL, 3);
    pthread_create(&a, NULL, first, NULL);
    pthread_create(&b, NULL, second, NULL);
    pthread_barrier_wait(&step);
    make("/tmp/t/m1"); report("m");
    pthread_barrier_wait(&step);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    make("/tmp/t/m2"); report("m");
    return 0;
}
"""

IDSEQ = "/usr/local/bin/idseq"
SHOW = f"{IDSEQ} show -"
ALL_APP = f"{APP} {APP} {APP} {APP} {APP} {APP}"

# (script, what it prints, {file in /tmp/o: owner recorded, None for root's}).
IDIOMS = [
    # pg_createcluster: $) and $( , then $> = $< = uid: setreuid(uid, -1), setresuid(-1, uid, -1);
    # the saved uid stays 0 until the exec makes it the effective one.
    ("perl -e '$) = \"1234 1234\"; $( = 1234; $> = $< = 1234; open F, \">/tmp/o/perl-before\"; close F; "
     f"exec \"{IDSEQ}\", \"show\", \"-\", \"touch\", \"/tmp/o/perl-after\", \"mkdir\", \"/tmp/o/perl-dir\"'",
     [ALL_APP], {"perl-before": (APP, APP), "perl-after": (APP, APP), "perl-dir": (APP, APP)}),
    # os.setreuid(1234, 1234): the saved uid follows (the real one was set).
    (f"{IDSEQ} reuid 1234,1234 show - touch /tmp/o/setreuid",
     [f"{APP} {APP} {APP} 0 0 0"], {"setreuid": (APP, 0)}),
    (f"{IDSEQ} resgid 1234,1234,1234 resuid 1234,1234,1234 show - touch /tmp/o/setresuid",
     [ALL_APP], {"setresuid": (APP, APP)}),
    # gosu: setgroups, setgid, setuid, exec.
    (f"{IDSEQ} groups {USERS} gid 1234 uid 1234 exec {SHOW} touch /tmp/o/gosu",
     [ALL_APP], {"gosu": (APP, APP)}),
    (f"setpriv --reuid=app --regid=app --init-groups {SHOW} touch /tmp/o/setpriv", [ALL_APP], {"setpriv": (APP, APP)}),
    (f"su app -s /bin/sh -c '{SHOW} touch /tmp/o/su'", [ALL_APP], {"su": (APP, APP)}),
    (f"runuser -u app -- {SHOW} touch /tmp/o/runuser", [ALL_APP], {"runuser": (APP, APP)}),
    (f"start-stop-daemon --start --chuid app:app --exec {IDSEQ} -- show - touch /tmp/o/ssd",
     [ALL_APP], {"ssd": (APP, APP)}),
    (f"chroot --userspec=app:app / {SHOW} touch /tmp/o/chroot", [ALL_APP], {"chroot": (APP, APP)}),
    # setfsuid alone: root still, but what it creates is the fs uid's.
    (f"{IDSEQ} fsuid 1234 touch /tmp/o/fsuid show -", ["0 0 0 0 0 0"], {"fsuid": (APP, 0)}),
    # A partial drop, then exec: saved := effective; the real uid 0 still lets it back.
    # (i386 creations are refused then, as the user filter refuses them.)
    (f"{IDSEQ} resuid -1,1234,-1 touch /tmp/o/partial-before i386creat /tmp/o/i386 exec {SHOW} "
     "touch /tmp/o/partial-after uid 0 show - touch /tmp/o/partial-back uid 1234 touch /tmp/o/partial-again",
     ["i386creat /tmp/o/i386: Function not implemented", f"0 {APP} {APP} 0 0 0", f"0 0 {APP} 0 0 0"],
     {"partial-before": (APP, 0), "partial-after": (APP, 0), "partial-back": None, "partial-again": (APP, 0)}),
]


def _compile(source: str, binary, tmp_path, *flags) -> None:
    src = tmp_path / (binary.name + ".c")
    src.write_text(source)
    subprocess.run(["gcc", "-O1", "-static", *flags, "-o", str(binary), str(src)], check=True)


@pytest.fixture(scope="module")
def app_bundle(tmp_path_factory, debian_layout_ro):
    """A bookworm bundle with user app (1234, also in group users) and the idseq/threads programs."""
    tmp = tmp_path_factory.mktemp("creds")
    bundle = tmp / "bundle"
    umoci_py("unpack", "--rootless", "--image", f"{debian_layout_ro}:bookworm", bundle)
    bin_dir = bundle / "rootfs/usr/local/bin"
    _compile(IDSEQ_C, bin_dir / "idseq", tmp)
    _compile(THREADS_C, bin_dir / "threads", tmp, "-pthread")
    status, out = run_sh(bundle, f"useradd -m -u {APP} -G users app && mkdir -m 1777 /tmp/o /tmp/t /tmp/s")
    assert status == 0, out
    return bundle


@pytest.fixture
def bundle(app_bundle, tmp_path):
    return private_copy(app_bundle, tmp_path)


def _repacked(bundle, debian_layout) -> dict:
    """The members of the layer umoci-py repacks from the bundle, by path."""
    umoci_py("repack", "--image", f"{debian_layout}:bookworm", bundle)
    return {name.lstrip("./"): m for name, m in top_layer(debian_layout, "bookworm").items()}


@pytest.mark.parametrize("notify", [True, False], ids=["notify", "ptrace"])
def test_each_idiom_reports_its_ids_and_records_what_it_creates(bundle, debian_layout, notify):
    script = "; ".join(f"echo '== {i}'; {cmd}" for i, (cmd, _, _) in enumerate(IDIOMS))
    status, out = run_sh(bundle, script, notify=notify)
    assert status == 0, out
    sections = out.split("== ")[1:]
    for (cmd, printed, _), section in zip(IDIOMS, sections):
        assert section.splitlines()[1:] == printed, (cmd, out)
    owners = {name: owner for _, _, files in IDIOMS for name, owner in files.items()}
    tmp = bundle / "rootfs/tmp/o"
    assert {name: host_owner(tmp / name) for name in owners} == owners
    assert not (tmp / "i386").exists()
    layer = _repacked(bundle, debian_layout)
    assert {name: (layer[f"tmp/o/{name}"].uid, layer[f"tmp/o/{name}"].gid) for name in owners} == \
        {name: owner or (0, 0) for name, owner in owners.items()}


@pytest.mark.parametrize("notify", [True, False], ids=["notify", "ptrace"])
def test_threads_switch_ids_one_by_one(bundle, notify):
    status, out = run_sh(bundle, "/usr/local/bin/threads", notify=notify)
    assert status == 0, out
    assert sorted(out.splitlines()) == ["a 1001 1001", "a 1001 1001", "b 0 0", "b 1002 1002", "m 0 0", "m 0 0"]
    tmp = bundle / "rootfs/tmp/t"
    assert {name: host_owner(tmp / name) for name in ("a1", "a2", "b0", "b1", "m1", "m2")} == {
        "a1": (1001, 1001), "a2": (1001, 1001), "b0": None, "b1": (1002, 1002), "m1": None, "m2": None}


def test_apt_style_probe_then_root_again_costs_no_filter(bundle):
    # apt's sandbox probe (setgroups, setegid, seteuid, a file made and removed, all back):
    # followed call by call, no user filter left behind for what root does next.
    probe = (f"{IDSEQ} groups 65534 resgid -1,65534,-1 resuid -1,42,-1 touch /tmp/o/probe "
             "resuid -1,0,-1 resgid -1,0,-1 groups 0 touch /tmp/o/root-again show -")
    stats = api.Stats()
    status, out = run_sh(bundle, probe, stats=stats)
    assert (status, out) == (0, "0 0 0 0 0 0\n")
    assert host_owner(bundle / "rootfs/tmp/o/probe") == (42, 65534)
    assert host_owner(bundle / "rootfs/tmp/o/root-again") is None
    assert stats.trapped == 0 and 0 < stats.stepped < 40


AS_APP = """cd /tmp/s
mkfifo p && chmod 600 p && chgrp users p
ln -s target l && chown -h app:users l
perl -e 'use Socket; socket(S, PF_UNIX, SOCK_STREAM, 0) or die; bind(S, pack_sockaddr_un("/tmp/s/sock")) or die "bind: $!"'
chmod 700 sock && chgrp users sock
chmod 600 /etc/hostname
stat -c '%n %U:%G %a' p l sock
"""


@pytest.mark.parametrize("notify", [True, False], ids=["notify", "ptrace"])
def test_sockets_fifos_and_symlinks_chmod_and_chown_by_their_owner(bundle, debian_layout, notify):
    (bundle / "rootfs/usr/local/bin/as-app").write_text(AS_APP)
    script = ("runuser -u app -- sh /usr/local/bin/as-app; cd /tmp/s && ln -s target rootlink && "
              "chown -h app:app rootlink && mkfifo rootfifo && chown app rootfifo && chmod 640 rootfifo && "
              "stat -c '%n %U:%G %a' rootlink rootfifo")
    status, out = run_sh(bundle, script, notify=notify)
    assert out.splitlines() == [
        "chmod: changing permissions of '/etc/hostname': Operation not permitted",
        "p app:users 600", "l app:users 777", "sock app:users 700", "rootlink app:app 777", "rootfifo app:root 640"]
    assert status == 0
    tmp = bundle / "rootfs/tmp/s"
    records = read_side(tmp)
    assert {name: side_owner(records, name, os.lstat(tmp / name).st_ino)
            for name in ("p", "l", "sock", "rootlink", "rootfifo")} == {
        "p": (APP, USERS), "l": (APP, USERS), "sock": (APP, USERS), "rootlink": (APP, APP), "rootfifo": (APP, 0)}
    layer = _repacked(bundle, debian_layout)
    got = {name: (layer[f"tmp/s/{name}"].uid, layer[f"tmp/s/{name}"].gid, layer[f"tmp/s/{name}"].mode)
           for name in ("p", "l", "rootlink", "rootfifo")}
    assert got == {"p": (APP, USERS, 0o600), "l": (APP, USERS, 0o777), "rootlink": (APP, APP, 0o777),
                   "rootfifo": (APP, 0, 0o640)}
    assert layer["tmp/s/p"].isfifo() and layer["tmp/s/l"].issym()
    assert "tmp/s/sock" not in layer   # a tar layer has no sockets (docker and umoci leave them out)


PEER_SERVER = """use Socket; $| = 1;
socketpair(A, B, AF_UNIX, SOCK_STREAM, 0) or die;
print join(" ", (unpack "iII", getsockopt(A, SOL_SOCKET, SO_PEERCRED))[1, 2]), "\\n";
socket(S, PF_UNIX, SOCK_STREAM, 0) or die; bind(S, pack_sockaddr_un("/tmp/s/peer")) or die; listen(S, 1);
print "ready\\n";
accept(C, S) or die;
print join(" ", (unpack "iII", getsockopt(C, SOL_SOCKET, SO_PEERCRED))[1, 2]), "\\n";
"""
PEER_CLIENT = ('use Socket; socket(C, PF_UNIX, SOCK_STREAM, 0) or die; '
               'connect(C, pack_sockaddr_un("/tmp/s/peer")) or die "connect: $!"')


@pytest.mark.parametrize("notify", [True, False], ids=["notify", "ptrace"])
def test_so_peercred_reports_the_peers_fake_ids(bundle, notify):
    # postgres's peer authentication: the server (app) asks who its client (nobody) is.
    (bundle / "rootfs/usr/local/bin/peer-server").write_text(PEER_SERVER)
    (bundle / "rootfs/usr/local/bin/peer-client").write_text(PEER_CLIENT)
    script = ("runuser -u app -- perl /usr/local/bin/peer-server | { read own; echo $own; read ready; "
              "runuser -u nobody -- perl /usr/local/bin/peer-client; cat; }")
    status, out = run_sh(bundle, script, notify=notify)
    assert (status, out.splitlines()) == (0, [f"{APP} {APP}", "65534 65534"])
