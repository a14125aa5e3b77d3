"""orca-build's `docker buildx build` flags, each checked by what it changes:
ssh agents that answer inside a RUN and leave nothing behind, metadata files,
labels and annotations, RUN sandbox flags."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from orca_build_helpers import cli_build, context, image, layer_contents, run_cli
from umoci_py import refs
from umoci_py.cas import Layout


# --- ssh ----------------------------------------------------------------------------------------

def _host_program(dest: Path, program: str) -> None:
    """program and the libraries it loads, to run from a bind mount with the
    loader named explicitly (busybox has no libc)."""
    dest.mkdir()
    shutil.copy(program, dest / Path(program).name)
    out = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    for path in re.findall(r"(/\S+\.so[.\d]*)", out):
        shutil.copy(path, dest / ("ld.so" if "ld-linux" in path else Path(path).name))


@pytest.fixture
def ssh_agent(tmp_path):
    """A real ssh-agent with one key loaded; (socket path, key comment)."""
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "orca-test-key", "-f", keys / "id"],
                   check=True)
    sock = tmp_path / "agent.sock"
    out = subprocess.run(["ssh-agent", "-s", "-a", str(sock)], capture_output=True, text=True, check=True).stdout
    pid = int(re.search(r"SSH_AGENT_PID=(\d+)", out).group(1))
    try:
        subprocess.run(["ssh-add", "-q", keys / "id"], env={**os.environ, "SSH_AUTH_SOCK": str(sock)}, check=True)
        yield sock
    finally:
        os.kill(pid, 15)


SSH_FILE = """\
FROM BASE
RUN --mount=type=bind,source=t,target=/t --mount=type=ssh \
    /t/ld.so --library-path /t /t/ssh-add -l > /keys; \
    echo "$SSH_AUTH_SOCK $(stat -c '%a %F' "$SSH_AUTH_SOCK")" > /sock
RUN --mount=type=ssh,id=deploy,target=/agent,mode=0660,uid=1000,gid=1001,required \
    --mount=type=bind,source=t,target=/t \
    /t/ld.so --library-path /t /t/ssh-add -l > /deploy && echo "$SSH_AUTH_SOCK" >> /deploy && \
    stat -c '%a %u:%g' /agent >> /deploy
RUN --mount=type=ssh,id=absent echo "${SSH_AUTH_SOCK:-unset} $(ls /run/buildkit)" > /absent
"""


def test_ssh_mount_forwards_an_agent_that_answers_and_leaves_nothing(tmp_path, busybox_layout, ssh_agent):
    ctx = context(tmp_path, busybox_layout, SSH_FILE)
    _host_program(ctx / "t", shutil.which("ssh-add"))
    res = cli_build(tmp_path, ctx, "-t", "app", "--ssh", "default", "--ssh", f"deploy={ssh_agent}",
                     env={"SSH_AUTH_SOCK": str(ssh_agent)})
    assert res.exit_code == 0, res.output
    layout, _, manifest, _ = image(tmp_path, "app")
    first, second, third = (layer_contents(layout, d) for d in manifest["layers"][-3:])
    assert b"orca-test-key (ED25519)" in first["keys"]          # the agent answered through the mount
    assert first["sock"] == b"/run/buildkit/ssh_agent.0 600 socket\n"
    deploy = second["deploy"].decode().splitlines()
    assert "orca-test-key (ED25519)" in deploy[0] and deploy[1:] == ["/agent", "660 1000:1001"]
    assert set(second) == {".", "deploy"} and set(first) == {".", "keys", "sock"}
    # an optional agent that was not given is not mounted; SSH_AUTH_SOCK still names its place
    assert third["absent"] == b"/run/buildkit/ssh_agent.0 \n"
    for files in (first, second, third):
        assert not [name for name in files if name.startswith(("run", "agent"))], files.keys()

    # the socket's path is not part of any step's key
    moved = tmp_path / "moved.sock"
    moved.symlink_to(ssh_agent)
    again = cli_build(tmp_path, ctx, "-t", "app", "--ssh", f"default={moved}", "--ssh", f"deploy={moved}")
    assert again.exit_code == 0, again.output
    assert again.output.count("CACHED") == 3
    for path in [*(tmp_path / "cache").rglob("*"), *(tmp_path / "out").rglob("*")]:
        if path.is_file():
            assert str(ssh_agent).encode() not in path.read_bytes(), path
            assert b"agent.sock" not in path.read_bytes(), path


def test_ssh_errors_are_one_line(tmp_path, busybox_layout, ssh_agent):
    ctx = context(tmp_path, busybox_layout, "FROM BASE\nRUN --mount=type=ssh,required=true true\n")
    res = cli_build(tmp_path, ctx)
    assert res.exit_code == 1
    assert res.output.splitlines()[-1].endswith(
        "Dockerfile:2: ssh agent 'default' required but not provided (--ssh default=SOCKET)")
    res = cli_build(tmp_path, ctx, "--ssh", "default", env={"SSH_AUTH_SOCK": ""})
    assert res.exit_code == 2 and len(res.output.splitlines()) == 1
    assert res.output.startswith("orca-build: Invalid value for --ssh: 'default': SSH_AUTH_SOCK is not set")
    res = cli_build(tmp_path, ctx, "--ssh", f"default={tmp_path / 'keys' / 'id'}")
    assert res.exit_code == 1
    assert res.output.strip() == f"orca-build: --ssh default={tmp_path / 'keys' / 'id'}: {tmp_path / 'keys' / 'id'}: " \
                                 "not a socket (give an ssh-agent socket; key files are not loaded, add them " \
                                 "to an agent with ssh-add)"


# --- the image's metadata ----------------------------------------------------------------------

META_FILE = "FROM BASE\nLABEL from.dockerfile=1 both=dockerfile\nCOPY Dockerfile /\n"


def test_quiet_iidfile_and_metadata_file_match_the_layout(tmp_path, busybox_layout):
    ctx = context(tmp_path, busybox_layout, META_FILE)
    res = cli_build(tmp_path, ctx, "-q", "-t", "app", "-t", "app:2", "--iidfile", str(tmp_path / "iid"),
                     "--metadata-file", str(tmp_path / "meta.json"))
    assert res.exit_code == 0, res.output
    layout, desc, manifest, _ = image(tmp_path, "app")
    assert res.output == desc["digest"] + "\n"                 # -q: nothing but the digest
    assert (tmp_path / "iid").read_text() == desc["digest"]
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta == {"containerimage.digest": desc["digest"],
                    "containerimage.config.digest": manifest["config"]["digest"],
                    "containerimage.descriptor": {k: desc[k] for k in ("mediaType", "digest", "size")},
                    "image.name": "app,app:2"}


def test_labels_go_to_the_config_and_annotations_where_their_kind_says(tmp_path, busybox_layout):
    ctx = context(tmp_path, busybox_layout, META_FILE)
    res = cli_build(tmp_path, ctx, "-t", "app", "--label", "org.example.team=build", "--label", "both=cli",
                     "--annotation", "org.opencontainers.image.source=https://example.test/app",
                     "--annotation", "manifest-descriptor:org.example.desc=d",
                     "--annotation", "index,manifest:org.example.both=x")
    assert res.exit_code == 0, res.output
    layout, desc, manifest, config = image(tmp_path, "app")
    assert config["config"]["Labels"] == {"from.dockerfile": "1", "both": "cli", "org.example.team": "build"}
    assert manifest["annotations"] == {"org.opencontainers.image.source": "https://example.test/app",
                                       "org.example.both": "x"}
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    (entry,) = index["manifests"]
    assert entry["annotations"] == {"org.example.desc": "d", "org.opencontainers.image.ref.name": "app"}
    assert index["annotations"] == {"org.example.both": "x"}

    for bad, message in [("novalue", "--annotation novalue: expected [KIND:]KEY=VALUE"),
                         ("index-descriptor:k=v", "unknown kind 'index-descriptor'"),
                         ("manifest[linux/amd64]:k=v", "platform-qualified annotations are not supported")]:
        res = cli_build(tmp_path, ctx, "--annotation", bad)
        assert res.exit_code == 1 and message in res.output and len(res.output.splitlines()) == 1, res.output


def test_no_cache_filter_reruns_only_the_named_stage(tmp_path, busybox_layout):
    ctx = context(tmp_path, busybox_layout,
                  "FROM BASE AS Tools\nRUN echo tools > /t\n"
                  "FROM BASE AS app\nRUN echo app > /a\nCOPY --from=tools /t /t\n")
    first = cli_build(tmp_path, ctx)
    assert first.exit_code == 0, first.output
    again = cli_build(tmp_path, ctx, "--no-cache-filter", "tools")
    assert again.exit_code == 0, again.output
    steps = {}
    for line in again.output.splitlines():
        if m := re.match(r"#(\d+) \[(\S+)\] (.*)", line):
            steps[m.group(1)] = m.group(3)
    cached = {steps[n] for n in re.findall(r"#(\d+) CACHED", again.output)}
    assert cached == {"RUN echo app > /a", "COPY --from=tools /t /t"}


# --- the RUN sandbox ---------------------------------------------------------------------------

SANDBOX_FILE = """\
FROM BASE
RUN cat /proc/net/dev > /net; ulimit -n > /nofile; ulimit -Hn >> /nofile; grep ' /dev/shm ' /proc/mounts > /shm; \
    cat /etc/hosts > /hosts
"""


def test_network_ulimit_shm_size_and_add_host_reach_the_run(tmp_path, busybox_layout):
    ctx = context(tmp_path, busybox_layout, SANDBOX_FILE)
    res = cli_build(tmp_path, ctx, "-t", "app", "--network", "none", "--ulimit", "nofile=100:200",
                     "--shm-size", "2m", "--add-host", "db.internal:10.1.2.3", "--add-host", "v6=[fd00::1]")
    assert res.exit_code == 0, res.output
    layout, _, manifest, _ = image(tmp_path, "app")
    files = layer_contents(layout, manifest["layers"][-1])
    assert [line.split(":")[0].strip() for line in files["net"].decode().splitlines()[2:]] == ["lo"]
    assert files["nofile"] == b"100\n200\n"
    assert "size=2048k" in files["shm"].decode()
    hosts = files["hosts"].decode().splitlines()
    assert hosts[-2:] == ["10.1.2.3\tdb.internal", "fd00::1\tv6"]
    assert "buildkitsandbox" in " ".join(hosts[:-2])     # the same file that names the step's host
    # the defaults: the host's network, the build's own limits, a 64 MiB /dev/shm; and a new key
    plain = cli_build(tmp_path, ctx, "-t", "plain")
    assert plain.exit_code == 0 and "CACHED" not in plain.output, plain.output
    files = layer_contents(*(lambda l, _d, m, _c: (l, m["layers"][-1]))(*image(tmp_path, "plain")))
    assert len(files["net"].decode().splitlines()[2:]) > 1
    assert "size=65536k" in files["shm"].decode()
    assert "db.internal" not in files["hosts"].decode()


def test_sandbox_flag_errors_are_one_line(tmp_path, busybox_layout):
    ctx = context(tmp_path, busybox_layout, SANDBOX_FILE)
    for flags, message in [
        (["--ulimit", "nofile=1:100000000000"], "--ulimit nofile=1:100000000000: the hard limit cannot be raised"),
        (["--ulimit", "bogus=1"], "--ulimit bogus=1: expected NAME=SOFT[:HARD]"),
        (["--shm-size", "lots"], "--shm-size lots: expected a size such as 64m or 1g"),
        (["--add-host", "db"], "--add-host db: expected NAME:IP"),
        (["--cache-dir", "/proc/1/nope"], "orca-build: /proc/1/nope"),
    ]:
        res = cli_build(tmp_path, ctx, *flags)
        assert res.exit_code == 1, res.output
        assert len(res.output.splitlines()) == 1 and message in res.output, res.output


def test_version_on_every_cli():
    from runrootless.cli import main as runrootless_main
    from umoci_py.cli import cli as umoci_cli
    results = [(run_cli("--version"), "orca-build")]
    results += [(CliRunner().invoke(command, ["--version"]), name)
                for command, name in [(runrootless_main, "runrootless"), (umoci_cli, "umoci-py")]]
    for res, name in results:
        assert res.exit_code == 0 and re.match(rf"{name} version \d+\.\d+\.\d+\n", res.output), res.output


def test_pull_takes_a_bare_name_from_its_registry_not_the_layout(tmp_path, busybox_layout):
    # the output layout has the base under a bare name; --pull asks Docker Hub
    # for it instead (here: no such repository, or no network: either way an error naming it)
    out = Layout.open(busybox_layout)
    refs.set_tag(out, "orcapulltest", refs.resolve(out, "latest")[-1])
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM orcapulltest\nCOPY Dockerfile /\n")
    run = ["--layout", str(busybox_layout), "--cache-dir", str(tmp_path / "cache"), "--progress", "plain"]
    res = run_cli(*run, str(ctx))
    assert res.exit_code == 0, res.output
    res = run_cli(*run, "--pull", str(ctx))
    assert res.exit_code == 1
    assert res.stderr.startswith(f"orca-build: {ctx / 'Dockerfile'}:1: manifest docker.io/library/orcapulltest:latest: ")
    assert len(res.stderr.splitlines()) == 1
