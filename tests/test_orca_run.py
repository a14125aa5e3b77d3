"""orca-build RUN steps on the busybox image: reproducible layers, secrets that
leave no trace, network isolation, shebang heredocs, failures that say where."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

from layer_tars import entry, make_tar
from oracle_build import image_manifest
from orca_build_helpers import build, context, image, layer_files, manifest, run_cli, step_states

from orca import runstep
from orca.errors import BuildError


REPRO = """\
FROM BASE
RUN mkdir -p /data/sub && echo made > /data/sub/file && ln -s sub/file /data/link && touch /data/empty
COPY hello.txt /data/
"""


def test_same_source_date_epoch_same_digest_with_a_run_step(tmp_path, busybox_layout):
    ctx = context(tmp_path, busybox_layout, REPRO)
    (ctx / "hello.txt").write_text("hi\n")
    sde = {"SOURCE_DATE_EPOCH": "1700000000"}
    first, log1, _ = build(tmp_path, ctx, build_args=sde)
    assert not isinstance(first, BuildError), log1
    (ctx / "hello.txt").touch()  # a new mtime, same content
    second, log2, _ = build(tmp_path, ctx, build_args=sde, no_cache=True)
    assert not isinstance(second, BuildError), log2
    assert "CACHED" not in log2
    assert second.descriptor["digest"] == first.descriptor["digest"]
    layout, man, config = manifest(tmp_path, second)
    files = layer_files(layout, man["layers"][-2])
    assert files["data/sub/file"][1] == b"made\n" and files["data/link"][0].linkname == "sub/file"
    assert all(m.mtime <= 1700000000 for m, _ in files.values())
    assert config["created"].startswith("2023-11-14T22:13:20")


SECRET = "s3cr3t-7f1c9a2e-do-not-leak"
SECRET_FILE = """\
FROM BASE
RUN --mount=type=secret,id=tok cat /run/secrets/tok; echo; sha256sum /run/secrets/tok | cut -c1-64 > /seen
RUN --mount=type=secret,id=tok,env=TOK echo "token is $TOK" && printf %s "$TOK" | wc -c > /len
RUN --network=none cat /proc/net/dev > /ifaces
"""


def test_secrets_never_leave_the_run_and_network_none_has_only_lo(tmp_path, busybox_layout):
    import hashlib
    ctx = context(tmp_path, busybox_layout, SECRET_FILE)
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n")
    result, log, _ = build(tmp_path, ctx, secrets={"tok": secret})
    assert not isinstance(result, BuildError), log
    layout, man, config = manifest(tmp_path, result)
    seen = layer_files(layout, man["layers"][-3])["seen"][1].decode().strip()
    assert seen == hashlib.sha256((SECRET + "\n").encode()).hexdigest()  # the RUN did read it
    assert layer_files(layout, man["layers"][-2])["len"][1].strip() == str(len(SECRET) + 1).encode()
    ifaces = layer_files(layout, man["layers"][-1])["ifaces"][1].decode().splitlines()[2:]
    assert [line.split(":")[0].strip() for line in ifaces] == ["lo"]

    assert "****" in log and SECRET not in log
    needle = SECRET.encode()
    cache = tmp_path / "cache"
    for path in [*cache.rglob("*"), *(tmp_path / "out").rglob("*")]:
        if not path.is_file():
            continue
        data = path.read_bytes()
        assert needle not in data, path
        if data[:2] == b"\x1f\x8b":
            assert needle not in gzip.decompress(data), path
    assert SECRET not in json.dumps(config["history"])


def test_secret_mount_honours_mode_uid_and_gid(tmp_path, busybox_layout):
    ctx = context(tmp_path, busybox_layout,
                  "FROM BASE\n"
                  "RUN --mount=type=secret,id=tok stat -c '%a %u %g' /run/secrets/tok > /default\n"
                  "RUN --mount=type=secret,id=tok,mode=0444,uid=1000,gid=1001,target=/s "
                  "stat -c '%a %u %g' /s > /asked && cat /s > /dev/null\n")
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    result, log, _ = build(tmp_path, ctx, secrets={"tok": secret})
    assert not isinstance(result, BuildError), log
    layout, man, _ = manifest(tmp_path, result)
    assert layer_files(layout, man["layers"][-2])["default"][1] == b"400 0 0\n"
    files = layer_files(layout, man["layers"][-1])
    assert files["asked"][1] == b"444 1000 1001\n"
    assert "s" not in files  # the mount point leaves nothing behind


def test_shebang_heredoc_runs_as_a_script_file(tmp_path, busybox_layout):
    ctx = context(tmp_path, busybox_layout, "FROM BASE\nRUN <<EOF\n#!/bin/sh -e\n"
                                            "echo \"script $0\" > /out\nEOF\n")
    result, log, _ = build(tmp_path, ctx)
    assert not isinstance(result, BuildError), log
    layout, man, _ = manifest(tmp_path, result)
    files = layer_files(layout, man["layers"][-1])
    assert files["out"][1] == b"script /run/pipes/EOF\n"  # run as a file, not as `sh -c`
    assert not any("pipes" in name for name in files)  # the mount leaves nothing behind


def test_failing_run_names_the_line_and_shows_its_output(tmp_path, busybox_layout):
    ctx = context(tmp_path, busybox_layout,
                  "FROM BASE\nENV A=1\n\nRUN echo first-line-of-output && echo reason-for-failure >&2 && exit 3\n"
                  "RUN echo never\n")
    err, log, _ = build(tmp_path, ctx)
    assert isinstance(err, BuildError)
    text = str(err)
    assert text.startswith(f"{ctx / 'Dockerfile'}:4: RUN echo first-line-of-output")
    assert "exit code 3" in text.splitlines()[0]
    assert len(text.splitlines()) == 1
    assert err.output == ("first-line-of-output", "reason-for-failure")
    assert "never" not in log
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_failing_run_through_the_cli_exits_non_zero(tmp_path, busybox_layout):
    ctx = context(tmp_path, busybox_layout, "FROM BASE\nRUN echo out-before-failure; false\n")
    res = run_cli("--layout", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"), "--progress", "quiet", str(ctx))
    assert res.exit_code == 1
    assert "Dockerfile:2: RUN echo out-before-failure; false: did not complete successfully: exit code 1" \
        in res.output
    assert "out-before-failure" in res.output


def test_run_security_insecure_is_refused(tmp_path, busybox_layout):
    ctx = context(tmp_path, busybox_layout, "FROM BASE\nRUN --security=insecure true\n")
    err, _, _ = build(tmp_path, ctx)
    assert isinstance(err, BuildError) and "Dockerfile:2: RUN --security=insecure: not allowed" in str(err)


NET_RAW_V2 = bytes.fromhex("0100000200200000000000000000000000000000")
CAPS_RUN = """\
FROM BASE
RUN chmod 0711 /caps/chmodded && touch /caps/touched && echo more >> /caps/written && chown 0:0 /caps/chowned
"""


def test_base_capability_survives_chmod_and_touch_not_a_write_or_chown(tmp_path, busybox_layout):
    caps = {"security.capability": NET_RAW_V2}
    names = ("chmodded", "touched", "written", "chowned", "untouched")
    (tmp_path / "caps.tar").write_bytes(make_tar(*(entry(f"caps/{n}", data=b"elf", mode=0o755, xattrs=caps)
                                                   for n in names)))
    add = subprocess.run([sys.executable, "-m", "umoci_py.cli", "raw", "add-layer", "--image",
                          f"{busybox_layout}:latest", tmp_path / "caps.tar"], capture_output=True, text=True)
    assert add.returncode == 0, add.stderr
    ctx = context(tmp_path, busybox_layout, CAPS_RUN)
    result, log, _ = build(tmp_path, ctx, tags=["caps"])
    assert not isinstance(result, BuildError), log
    paths = image_manifest(tmp_path / "out", "caps")["paths"]
    assert {n: paths[f"/caps/{n}"]["caps"] for n in names} == {
        "chmodded": NET_RAW_V2.hex(), "touched": NET_RAW_V2.hex(), "written": "", "chowned": "",
        "untouched": NET_RAW_V2.hex()}
    assert paths["/caps/chmodded"]["mode"] == "0711"


def _children() -> set[str]:
    """The pids of this process's children, alive or not yet reaped."""
    return {pid for task in Path("/proc/self/task").iterdir()
            for pid in (task / "children").read_text().split()}


TWO_RUN_STAGES = "FROM BASE AS a\nCOPY f /f\nRUN cat /f > /g\n\nFROM BASE\nRUN echo b > /b\nCOPY --from=a /g /g\n"


def test_one_run_helper_per_build_serves_every_run_and_ends_with_it(tmp_path, busybox_layout, monkeypatch):
    spawned = []
    spawn = os.posix_spawn
    monkeypatch.setattr(os, "posix_spawn", lambda *a, **kw: spawned.append(a[1]) or spawn(*a, **kw))
    before = _children()
    ctx = context(tmp_path, busybox_layout, TWO_RUN_STAGES)
    (ctx / "f").write_text("1\n")
    result, log, _ = build(tmp_path, ctx, tags=["two"])
    assert not isinstance(result, BuildError), log
    assert [argv[-3:-1] for argv in spawned] == [["-m", "orca.runstep"]]  # its workers are its own forks
    assert _children() == before
    layout, _, man, _ = image(tmp_path, "two")
    assert layer_files(layout, man["layers"][-2])["b"][1] == b"b\n"
    assert layer_files(layout, man["layers"][-1])["g"][1] == b"1\n"


def test_a_cached_build_ends_its_run_helper_too(tmp_path, busybox_layout):
    ctx = context(tmp_path, busybox_layout, TWO_RUN_STAGES)
    (ctx / "f").write_text("3\n")
    first, log, _ = build(tmp_path, ctx)
    assert not isinstance(first, BuildError), log
    before = _children()
    again, log, _ = build(tmp_path, ctx)
    assert not isinstance(again, BuildError), log
    assert set(step_states(log).values()) == {"CACHED"}
    assert _children() == before


def test_run_helper_ignores_modules_in_the_working_directory(tmp_path, busybox_layout):
    ctx = context(tmp_path, busybox_layout, "FROM BASE\nRUN echo ran > /ran\n")
    # a directory where orca-build is started, holding what would shadow the helper's modules
    cwd = tmp_path / "elsewhere"
    (cwd / "orca").mkdir(parents=True)
    (cwd / "orca" / "__init__.py").write_text("")
    (cwd / "orca" / "runstep.py").write_text(f"open({str(tmp_path / 'shadowed')!r}, 'w').close()\n")
    script = Path(sys.executable).parent / "orca-build"  # as installed: sys.path[0] is its own directory
    proc = subprocess.run([script, "--layout", tmp_path / "out",
                           "--cache-dir", tmp_path / "cache", "--progress", "quiet", "-t", "x", ctx],
                          cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "shadowed").exists()
    layout, _, manifest_, _ = image(tmp_path, "x")
    assert layer_files(layout, manifest_["layers"][-1])["ran"][1] == b"ran\n"
