"""orca-build on the Debian image as a user without subuid: apt-get install in
RUN, the result run by runrootless and runc, and an ex01-shaped multi-stage
build (two toolchains in concurrent stages, a final stage copying from both)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orca.execute import BuildRequest, run_build
from orca.progress import Progress

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def work(tmp_path_factory, debian_layout_ro) -> Path:
    """One output layout (holding the base) and one cache shared by the module."""
    work = tmp_path_factory.mktemp("apt")
    shutil.copytree(debian_layout_ro, work / "out")
    for path in (work / "out").rglob("*"):
        path.chmod(path.stat().st_mode | 0o200)
    return work


def build(work: Path, ctx: Path, **kw):
    log = io.StringIO()
    progress = Progress("plain", log)
    req = BuildRequest(context=ctx, layout=work / "out", cache_dir=work / "cache", progress=progress,
                       jobs=2, **kw)
    result = run_build(req)
    return result, progress, log.getvalue()


def cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, cwd=cwd)


def test_apt_hello_builds_and_runs_under_runrootless_and_runc(work):
    _, progress, log = build(work, EXAMPLES / "apt-hello", tags=["hello"])
    assert [s.cached for s in progress.steps] == [False]
    assert "Setting up hello" in log
    bundle = work / "hello-bundle"
    unpack = cli(Path(sys.executable).parent / "umoci-py", "unpack", "--rootless",
                 "--image", f"{work / 'out'}:hello", bundle)
    assert unpack.returncode == 0, unpack.stderr

    run = cli(Path(sys.executable).parent / "runrootless", "run", "-b", bundle, "hello-rr")
    assert run.returncode == 0, run.stderr
    assert run.stdout == "Hello, world!\n"

    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["hello"]
    config["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(config))
    runc = cli("runc", "--root", work / "runc", "run", "-b", bundle, "hello-runc")
    assert runc.returncode == 0, runc.stderr
    assert runc.stdout == "Hello, world!\n"

    _, progress, _ = build(work, EXAMPLES / "apt-hello", tags=["hello"])
    assert [s.cached for s in progress.steps] == [True]


def test_ex01_stages_overlap_and_a_context_change_reruns_only_its_steps(work):
    import gzip
    import tarfile
    from umoci_py.cas import Layout
    ctx = work / "ex01"
    shutil.copytree(EXAMPLES / "ex01", ctx)
    result, progress, log = build(work, ctx)
    steps = progress.steps
    assert not any(s.cached for s in steps), log
    installs = {s.stage: s for s in steps if "apt-get install" in s.text}
    c, asm = installs["buildc"], installs["buildasm"]
    assert c.start < asm.end and asm.start < c.end  # the two toolchains were installed at once

    layout = Layout.open(work / "out")
    manifest = layout.read_json(result.descriptor, "manifest")
    top = manifest["layers"][-1]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layout.read_blob(top["digest"], top["size"])))) as tf:
        assert tf.extractfile("greetings").read() == b"hello from tcc\nhello from nasm\n"

    (ctx / "buildbench-dummy").write_text("changed\n")
    _, progress, log = build(work, ctx)
    ran = [(s.stage, s.text) for s in progress.steps if not s.cached]
    assert ran == [("buildc", "COPY . /src"), ("buildc", "RUN mkdir /out && tcc -o /out/hello-c /src/hello.c")], log
    assert len(progress.steps) == 9
