"""Helpers shared by the orca-build tests: a build run in-process (run_build
with its log captured, or the command line with its streams captured), a
context from a Dockerfile, and what the build made (manifest, config, a
layer's files, each step's CACHED or DONE)."""

from __future__ import annotations

import gzip
import io
import os
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from orca import cli
from orca.errors import BuildError
from orca.execute import BuildRequest, run_build
from orca.progress import Progress
from umoci_py import refs
from umoci_py.cas import Layout

# orca-build as a process of its own, run by this interpreter (so from the code under test).
ORCA = [sys.executable, "-c", "from orca.cli import main; main()"]


def build(tmp_path: Path, ctx: Path, **kw):
    """run_build with the log captured; (result, log text, progress)."""
    log = io.StringIO()
    progress = Progress("plain", log)
    kw.setdefault("cache_dir", tmp_path / "cache")
    req = BuildRequest(context=ctx, layout=tmp_path / "out", progress=progress, jobs=2, **kw)
    try:
        result = run_build(req)
    except BuildError as err:
        return err, log.getvalue(), progress
    return result, log.getvalue(), progress


@dataclass
class CliResult:
    """What one orca-build command line did: its exit status and what it wrote."""
    exit_code: int
    stdout_bytes: bytes
    stderr_bytes: bytes
    output_bytes: bytes  # stdout and stderr interleaved, as a terminal shows them

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", "replace")

    @property
    def output(self) -> str:
        return self.output_bytes.decode("utf-8", "replace")


class _Capture(io.RawIOBase):
    """One stream's bytes, kept apart and also in the interleaved output."""

    def __init__(self, both: io.BytesIO):
        self.own, self.both = io.BytesIO(), both

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.own.write(data)
        self.both.write(data)
        return len(data)


def run_cli(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None) -> CliResult:
    """orca-build's command line in this process, stdin given, stdout and stderr
    captured, the environment changed by env for the call.  cli.run, not main:
    main would move the whole test process into orca-build's user namespace
    (the subprocess tests run main)."""
    both = io.BytesIO()
    out, err = _Capture(both), _Capture(both)
    data = input.encode() if isinstance(input, str) else input or b""
    saved, environ = (sys.stdin, sys.stdout, sys.stderr), os.environ.copy()
    sys.stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    sys.stdout, sys.stderr = (io.TextIOWrapper(s, encoding="utf-8", write_through=True) for s in (out, err))
    os.environ.update(env or {})
    try:
        cli.run(list(args))
        code = 0
    except SystemExit as stop:
        code = 0 if stop.code is None else stop.code
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
        os.environ.clear()
        os.environ.update(environ)
    return CliResult(code, out.own.getvalue(), err.own.getvalue(), both.getvalue())


def cli_build(tmp_path: Path, ctx: Path, *extra: str, env: dict | None = None) -> CliResult:
    """orca-build's command line in-process into tmp_path/out (cache tmp_path/cache), plain progress."""
    return run_cli("--layout", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                   "--progress", "plain", *extra, str(ctx), env=env)


def ok(res):
    """res, after asserting the CLI run succeeded (its output otherwise)."""
    assert res.exit_code == 0, res.output
    return res


def context(tmp_path: Path, base: Path, dockerfile: str, name: str = "ctx") -> Path:
    """tmp_path/name holding the Dockerfile, BASE in it naming the base layout's tag latest."""
    ctx = tmp_path / name
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile.replace("BASE", f"oci:{base}:latest"))
    return ctx


def image(tmp_path: Path, tag: str):
    """(layout, manifest descriptor, manifest, config) of tag in tmp_path/out."""
    layout = Layout.open(tmp_path / "out")
    desc = refs.resolve(layout, tag)[-1]
    manifest = layout.read_json(desc, "manifest")
    return layout, desc, manifest, layout.read_json(manifest["config"], "config")


def layer_files(layout: Layout, desc: dict) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    """name -> (header, content; b"" for all but regular files) of a gzip layer."""
    data = gzip.decompress(layout.read_blob(desc["digest"], desc["size"]))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: (m, tf.extractfile(m).read() if m.isfile() else b"") for m in tf.getmembers()}


def layer_contents(layout: Layout, desc: dict) -> dict[str, bytes]:
    """name -> content alone (b"" for all but regular files) of a gzip layer."""
    return {name: data for name, (_, data) in layer_files(layout, desc).items()}


def manifest(tmp_path: Path, result) -> tuple[Layout, dict, dict]:
    """(layout, manifest, config) of the image a build() into tmp_path made."""
    layout = Layout.open(tmp_path / "out")
    man = layout.read_json(result.descriptor, "manifest")
    return layout, man, layout.read_json(man["config"], "config")


def step_states(output: str) -> dict[str, str]:
    """instruction text -> CACHED or DONE, from the plain log."""
    names, states = {}, {}
    for line in output.splitlines():
        number, _, rest = line.partition(" ")
        if rest.startswith("["):
            names[number] = rest.split("] ", 1)[1]
        elif rest == "CACHED" or rest.startswith("DONE"):
            states[names[number]] = rest.split()[0]
    return states
