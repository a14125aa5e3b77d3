"""orca-build's `docker buildx build` flags, each checked by what it changes:
ssh agents that answer inside a RUN and leave nothing behind, metadata files,
labels and annotations, RUN sandbox flags."""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from orca.cli import cli
from umoci_py import refs
from umoci_py.cas import Layout


def orca_build(tmp_path: Path, ctx: Path, *extra: str, env: dict | None = None):
    return CliRunner().invoke(cli, ["--layout", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                                    "--progress", "plain", *extra, str(ctx)], env=env or {})


def context(tmp_path: Path, base: Path, dockerfile: str, name: str = "ctx") -> Path:
    ctx = tmp_path / name
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile.replace("BASE", f"oci:{base}:latest"))
    return ctx


def image(tmp_path: Path, tag: str):
    layout = Layout.open(tmp_path / "out")
    desc = refs.resolve(layout, tag)[-1]
    manifest = layout.read_json(desc, "manifest")
    return layout, desc, manifest, layout.read_json(manifest["config"], "config")


def layer_files(layout: Layout, desc: dict) -> dict[str, bytes]:
    data = gzip.decompress(layout.read_blob(desc["digest"], desc["size"]))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: tf.extractfile(m).read() if m.isfile() else b"" for m in tf.getmembers()}


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
RUN --mount=type=ssh,id=deploy,target=/agent,mode=0660,required \
    --mount=type=bind,source=t,target=/t \
    /t/ld.so --library-path /t /t/ssh-add -l > /deploy && echo "$SSH_AUTH_SOCK" >> /deploy && stat -c %a /agent >> /deploy
RUN --mount=type=ssh,id=absent echo "${SSH_AUTH_SOCK:-unset} $(ls /run/buildkit)" > /absent
"""


def test_ssh_mount_forwards_an_agent_that_answers_and_leaves_nothing(tmp_path, busybox_layout, ssh_agent):
    ctx = context(tmp_path, busybox_layout, SSH_FILE)
    _host_program(ctx / "t", shutil.which("ssh-add"))
    res = orca_build(tmp_path, ctx, "-t", "app", "--ssh", "default", "--ssh", f"deploy={ssh_agent}",
                     env={"SSH_AUTH_SOCK": str(ssh_agent)})
    assert res.exit_code == 0, res.output
    layout, _, manifest, _ = image(tmp_path, "app")
    first, second, third = (layer_files(layout, d) for d in manifest["layers"][-3:])
    assert b"orca-test-key (ED25519)" in first["keys"]          # the agent answered through the mount
    assert first["sock"] == b"/run/buildkit/ssh_agent.0 600 socket\n"
    deploy = second["deploy"].decode().splitlines()
    assert "orca-test-key (ED25519)" in deploy[0] and deploy[1:] == ["/agent", "660"]
    # an optional agent that was not given is not mounted; SSH_AUTH_SOCK still names its place
    assert third["absent"] == b"/run/buildkit/ssh_agent.0 \n"
    for files in (first, second, third):
        assert not [name for name in files if name.startswith(("run", "agent"))], files.keys()

    # the socket's path is not part of any step's key
    moved = tmp_path / "moved.sock"
    moved.symlink_to(ssh_agent)
    again = orca_build(tmp_path, ctx, "-t", "app", "--ssh", f"default={moved}", "--ssh", f"deploy={moved}")
    assert again.exit_code == 0, again.output
    assert again.output.count("CACHED") == 3
    for path in [*(tmp_path / "cache").rglob("*"), *(tmp_path / "out").rglob("*")]:
        if path.is_file():
            assert str(ssh_agent).encode() not in path.read_bytes(), path
            assert b"agent.sock" not in path.read_bytes(), path


def test_ssh_errors_are_one_line(tmp_path, busybox_layout, ssh_agent):
    ctx = context(tmp_path, busybox_layout, "FROM BASE\nRUN --mount=type=ssh,required=true true\n")
    res = orca_build(tmp_path, ctx)
    assert res.exit_code == 1
    assert res.output.splitlines()[-1].endswith(
        "Dockerfile:2: ssh agent 'default' required but not provided (--ssh default=SOCKET)")
    res = orca_build(tmp_path, ctx, "--ssh", "default", env={"SSH_AUTH_SOCK": ""})
    assert res.exit_code == 2 and "SSH_AUTH_SOCK is not set" in res.output
    res = orca_build(tmp_path, ctx, "--ssh", f"default={tmp_path / 'keys' / 'id'}")
    assert res.exit_code == 1
    assert res.output.strip() == f"orca-build: --ssh default={tmp_path / 'keys' / 'id'}: {tmp_path / 'keys' / 'id'}: " \
                                 "not a socket (give an ssh-agent socket; key files are not loaded, add them " \
                                 "to an agent with ssh-add)"
