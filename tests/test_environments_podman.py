"""orca-build where users build: as a non-root uid with no capabilities inside
podman containers, in the environments CI runners on Kubernetes give.

podman needs root, the tests do not: tools/setup-host lets the test user run
one root-owned wrapper through sudo (tools/podman-env), which runs a command
as that same user in the named environment, on the host's /usr, /etc and /opt
(no registry).  Each environment builds examples/apt-hello with apt against
the real archive, runs the image ("Hello, world!"), and shows that no
process outlived its step.  Docker's default seccomp profile (moby's
profiles/seccomp/default.json, tests/data) allows no user namespace: there
the build ends with one line saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_dir import FIXTURES

pytestmark = pytest.mark.slow

WRAPPER = "/usr/local/libexec/orca-envs/podman-env"
SRC = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MASKED_NOTE = "note: /proc is masked by the container runtime (mount(proc on /proc): EPERM"

# Every process in the container that is not this check or its ancestors
# (the script is pid 1 of podman's pid namespace).
LEFT = r"""
import os
keep, pid = {1}, os.getpid()
while pid > 1:
    keep.add(pid)
    stat = open(f"/proc/{pid}/stat", "rb").read()
    pid = int(stat[stat.rindex(b")") + 2:].split()[1])
left = [open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ").decode().strip()
        for p in os.listdir("/proc") if p.isdigit() and int(p) not in keep]
print("left:", left or "none")
"""
# A daemon in its own session and a background child, both still running at exit.
DAEMONS = ["/bin/sh", "-c", "setsid sleep 1000 & sleep 1000 & echo started"]

SETUP = f"""
export HOME=/tmp/home PATH={BIN}:/usr/sbin:/usr/bin:/sbin:/bin XDG_CACHE_HOME=/tmp/cache XDG_DATA_HOME=/tmp/data
mkdir $HOME && cp -r {FIXTURES}/debian /tmp/layout && chmod -R u+w /tmp/layout || exit 1
"""
BUILD = SETUP + f"""
set -e
orca-build --progress plain --layout /tmp/layout -t hello {SRC}/examples/apt-hello > /tmp/build.log 2>&1 \\
    || {{ cat /tmp/build.log; exit 1; }}
grep '^note: ' /tmp/build.log || true
grep -c 'Setting up hello' /tmp/build.log
{sys.executable} -c '{LEFT}'
umoci-py unpack --rootless --image /tmp/layout:hello /tmp/bundle > /dev/null 2>&1
runrootless run -b /tmp/bundle hello 2> /dev/null
{sys.executable} -c '
import json; path = "/tmp/bundle/config.json"; config = json.load(open(path))
config["process"]["args"] = {json.dumps(DAEMONS)}; json.dump(config, open(path, "w"))'
runrootless run -b /tmp/bundle daemons 2> /dev/null
{sys.executable} -c '{LEFT}'
"""
REFUSED = SETUP + f"""
orca-build --progress quiet --layout /tmp/layout -t hello {SRC}/examples/apt-hello 2> /tmp/err
echo "orca-build exit $?"
grep -v '^rootless{{dev/' /tmp/err
umoci-py unpack --rootless --image /tmp/layout:bookworm /tmp/bundle > /dev/null 2>&1
runrootless run -b /tmp/bundle plain 2> /tmp/err
echo "runrootless exit $?"
cat /tmp/err
"""
# The environments of the README's table, by the wrapper's names.
BUILDS = {"defaults": "podman's defaults: its seccomp profile, a masked /proc",
          "unconfined": "seccomp unconfined, masked /proc (Kubernetes without a seccomp profile)",
          "userns": "its own user namespace, seccomp unconfined (Kubernetes hostUsers: false)",
          "unmasked": "seccomp unconfined and unmask=ALL (Kubernetes procMount: Unmasked)"}


@pytest.fixture(scope="module")
def started() -> dict[str, subprocess.Popen]:
    """All environments at once (their apt runs mostly wait for the archive); each test waits for its own."""
    procs = {env: _podman(env, BUILD) for env in BUILDS}
    procs["docker-default"] = _podman("docker-default", REFUSED)
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _podman(env: str, script: str) -> subprocess.Popen:
    return subprocess.Popen(["sudo", "-n", WRAPPER, env, "--", "/bin/sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)


def _output(proc: subprocess.Popen) -> tuple[int, list[str]]:
    out, _ = proc.communicate(timeout=1500)
    return proc.returncode, out.splitlines()


@pytest.mark.parametrize("env", BUILDS)
def test_apt_hello_builds_and_runs_and_no_step_leaves_a_process(started, env):
    status, lines = _output(started[env])
    assert status == 0, "\n".join(lines[-40:])
    notes = [line for line in lines if line.startswith("note: ")]
    assert lines[len(notes):] == ["1", "left: none", "Hello, world!", "started", "left: none"], "\n".join(lines)
    masked = [n for n in notes if n.startswith(MASKED_NOTE)]
    if env == "unmasked":
        assert notes == []              # nothing changes: a procfs and a pid namespace of the build's own
    else:
        assert len(masked) == 1         # once for the build, not once per step
    hostname = [n for n in notes if n.startswith("note: hostname buildkitsandbox skipped: sethostname(")]
    assert len(hostname) == (env == "defaults")   # podman's profile allows sethostname only with CAP_SYS_ADMIN
    assert len(notes) == len(masked) + len(hostname)


def test_docker_default_seccomp_profile_is_one_line_and_exit_1(started):
    status, lines = _output(started["docker-default"])
    assert status == 0, "\n".join(lines)
    cut = lines.index("runrootless exit 1")
    assert lines[0] == "orca-build exit 1"
    assert len(lines[1:cut]) == 1 and len(lines[cut + 1:]) == 1, "\n".join(lines)
    build_error, run_error = lines[1], lines[cut + 1]
    why = ("unprivileged user namespaces are unavailable: unshare(CLONE_NEWUSER): EPERM (Operation not permitted): "
           "the container's seccomp profile blocks user namespaces")
    assert build_error.startswith(f"orca-build: {SRC}/examples/apt-hello/Dockerfile:2: RUN apt-get update") \
        and why in build_error
    assert run_error.startswith(f"runrootless: {why}")
    assert "--security-opt seccomp=unconfined" in run_error and "seccompProfile of type Unconfined" in run_error


@pytest.mark.parametrize("env", [*BUILDS, "docker-default"])
def test_the_workload_is_the_calling_user_without_capabilities(env):
    proc = subprocess.run(["sudo", "-n", WRAPPER, env, "--", "/bin/sh", "-c",
                           "id -u; id -g; grep -E '^(CapEff|CapPrm|NoNewPrivs):' /proc/self/status"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(os.getuid()), str(os.getgid()), "CapPrm:", "0000000000000000",
                                   "CapEff:", "0000000000000000", "NoNewPrivs:", "1"]


def test_the_wrapper_takes_only_its_environments():
    proc = subprocess.run(["sudo", "-n", WRAPPER, "privileged", "--", "/bin/true"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("usage: podman-env defaults|unconfined|")
