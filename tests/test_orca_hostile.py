"""orca-build against hostile input: malformed Dockerfiles name file:line,
COPY/ADD never reach outside the context, Ctrl-C leaves layout and cache
consistent (secrets never leaving a RUN are covered in test_orca_run)."""

from __future__ import annotations

import gzip
import os
import random
import signal
import subprocess

import pytest

from orca_build_helpers import ORCA
from umoci_py_helpers import check_layout

OUTSIDE = b"outside-the-context-7c41e0"


def orca(tmp_path, ctx, *extra, **kw):
    return subprocess.run([*ORCA, "--layout", tmp_path / "out", "--cache-dir", tmp_path / "cache",
                           "--progress", "plain", *extra, ctx], capture_output=True, text=True, **kw)


def _ctx(tmp_path, dockerfile: str):
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


MALFORMED = {
    "unknown-instruction": ("FROM scratch\n\nFROB x\n", 3),
    "from-without-image": ("# comment\nFROM\n", 2),
    "unterminated-heredoc": ("FROM scratch\nRUN <<EOF\necho hi\n", 2),
    "bad-chmod": ("FROM scratch\nCOPY --chmod=xyz a b\n", 2),
    "env-without-value": ("FROM scratch\nENV\n", 2),
    "unknown-flag": ("FROM scratch\nCOPY --frob=1 a b\n", 2),
    "bad-healthcheck": ("FROM scratch\nHEALTHCHECK --interval=soon CMD true\n", 2),
    "bad-substitution": ("FROM scratch\nARG A\nENV B=${A\n", 3),
    "nested-substitution": ("FROM scratch\nARG A\nENV B=" + "${A:-" * 3000 + "}" * 3000 + "\n", 3),
    "instruction-before-from": ("RUN true\nFROM scratch\n", 1),
    "long-line": ("FROM scratch\nRUN " + "x" * 70000 + "\n", 2),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_dockerfile_names_file_and_line(tmp_path, name):
    text, line = MALFORMED[name]
    ctx = _ctx(tmp_path, text)
    proc = orca(tmp_path, ctx)
    assert proc.returncode == 1, proc
    errors = [l for l in proc.stderr.splitlines() if "Dockerfile" in l]
    assert errors and f"{ctx / 'Dockerfile'}:{line}:" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


ESCAPES = {
    "dotdot": "COPY ../outside/secret /x",
    "dotdot-deep": "COPY sub/../../outside/secret /x",
    "add-dotdot": "ADD ../outside/secret /x",
    "symlink-to-file": "COPY link-file /x",
    "symlink-to-dir": "COPY link-dir/secret /x",
    "symlink-dir-itself": "COPY link-dir /x",
    "absolute-symlink": "COPY abs-link /x",
}


@pytest.fixture
def escape_ctx(tmp_path, busybox_layout):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(OUTSIDE)
    ctx = _ctx(tmp_path, "")
    (ctx / "sub").mkdir()
    os.symlink("../outside/secret", ctx / "link-file")
    os.symlink("../outside", ctx / "link-dir")
    os.symlink(outside / "secret", ctx / "abs-link")
    return ctx, busybox_layout


def _grep_everything(tmp_path, needle: bytes) -> None:
    for root in (tmp_path / "out", tmp_path / "cache"):
        for path in root.rglob("*") if root.exists() else ():
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                assert needle not in data, path
                if data[:2] == b"\x1f\x8b":
                    assert needle not in gzip.decompress(data), path


@pytest.mark.parametrize("name", ESCAPES)
def test_copy_sources_escaping_the_context_are_refused(tmp_path, escape_ctx, name):
    ctx, base = escape_ctx
    (ctx / "Dockerfile").write_text(f"FROM oci:{base}:latest\nRUN true\n{ESCAPES[name]}\n")
    proc = orca(tmp_path, ctx)
    assert proc.returncode == 1, proc.stdout
    assert f"{ctx / 'Dockerfile'}:3:" in proc.stderr and "outside the build context" in proc.stderr, proc.stderr
    _grep_everything(tmp_path, OUTSIDE)


def test_symlinks_inside_copied_trees_stay_symlinks(tmp_path, escape_ctx):
    """A symlink out of the context inside a copied directory is copied as a
    link (never followed), and a glob matching one does not follow it either."""
    ctx, base = escape_ctx
    (ctx / "sub/inner").mkdir()
    os.symlink("../../../outside/secret", ctx / "sub/inner/out")
    (ctx / "Dockerfile").write_text(f"FROM oci:{base}:latest\nCOPY sub /sub\nCOPY link-* /globbed/\n")
    proc = orca(tmp_path, ctx, "-t", "t")
    if proc.returncode:
        assert "outside the build context" in proc.stderr, proc.stderr
    else:
        check_layout(tmp_path / "out")
    _grep_everything(tmp_path, OUTSIDE)


def test_ctrl_c_leaves_layout_and_cache_consistent(tmp_path, busybox_layout):
    rng = random.Random(2)
    # The RUN step lasts at least 2 s, so the two short waits of this seed (0.48 s, 0.57 s)
    # always interrupt a build, however fast the machine (it did not: with faster RUN steps
    # every build of the old 0.3-1.5 s waits finished first); the long ones let builds finish.
    ctx = _ctx(tmp_path, f"FROM oci:{busybox_layout}:latest\nCOPY a /a\n"
                         "RUN cat /a /a /a > /b && sleep 2 && echo done > /c\nCOPY Dockerfile /d\n")
    cmd = [*ORCA, "--layout", tmp_path / "out", "--cache-dir", tmp_path / "cache", "--progress", "quiet",
           "-t", "t", ctx]
    (ctx / "a").write_text("0\n")
    subprocess.run(cmd, check=True, capture_output=True)
    interrupted = 0
    for i in range(1, 7):
        (ctx / "a").write_text(f"{i}\n" * 20000)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            proc.wait(rng.uniform(0.3, 3.5))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            interrupted += 1
        _, err = proc.communicate(timeout=120)  # a hang is a failure, not a wait
        assert "Traceback" not in err, err
        assert proc.returncode in (0, 1, 130, -signal.SIGINT), (proc.returncode, err)
        check_layout(tmp_path / "out")
    assert interrupted
    proc = orca(tmp_path, ctx, "-t", "t")
    assert proc.returncode == 0, proc.stderr
    again = orca(tmp_path, ctx, "-t", "t")
    assert again.returncode == 0 and again.stdout.count("CACHED") + again.stderr.count("CACHED") >= 3
    print(f"Ctrl-C survived by orca-build: {interrupted}")
