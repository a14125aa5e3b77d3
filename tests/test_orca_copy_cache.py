"""COPY cache keys: what --exclude drops and what --link ignores."""

import gzip
import io
import tarfile

from click.testing import CliRunner

from orca.cli import cli
from orca_build_helpers import step_states
from umoci_py import refs
from umoci_py.cas import Layout


def _build(tmp_path, ctx):
    res = CliRunner().invoke(cli, ["--layout", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                                   "--progress", "plain", "-t", "app", str(ctx)], env={})
    assert res.exit_code == 0, res.output
    return res.output


def _last_layer(tmp_path) -> dict[str, bytes | None]:
    layout = Layout.open(tmp_path / "out")
    manifest = layout.read_json(refs.resolve(layout, "app")[-1], "manifest")
    desc = manifest["layers"][-1]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layout.read_blob(desc["digest"], desc["size"])))) as tf:
        return {m.name: tf.extractfile(m).read() if m.isfile() else None for m in tf.getmembers()}


def test_changing_an_excluded_file_does_not_rerun_the_copy(tmp_path, busybox_layout):
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(f"FROM oci:{busybox_layout}:latest\n"
                                    "COPY --exclude=*.tmp --exclude=cache src /app/\n")
    (ctx / "src" / "keep.txt").write_text("keep\n")
    (ctx / "src" / "scratch.tmp").write_text("one\n")
    (ctx / "src" / "cache").mkdir()
    (ctx / "src" / "cache" / "blob").write_text("one\n")
    copy = "COPY --exclude=*.tmp --exclude=cache src /app/"
    assert step_states(_build(tmp_path, ctx))[copy] == "DONE"
    assert set(_last_layer(tmp_path)) - {"."} == {"app", "app/keep.txt"}

    (ctx / "src" / "scratch.tmp").write_text("two\n")
    (ctx / "src" / "cache" / "blob").write_text("two\n")
    (ctx / "src" / "cache" / "new").write_text("new\n")
    assert step_states(_build(tmp_path, ctx))[copy] == "CACHED"

    (ctx / "src" / "keep.txt").write_text("changed\n")
    assert step_states(_build(tmp_path, ctx))[copy] == "DONE"
    assert _last_layer(tmp_path)["app/keep.txt"] == b"changed\n"
