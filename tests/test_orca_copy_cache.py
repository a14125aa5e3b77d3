"""COPY cache keys: what --exclude drops and what --link ignores."""

from orca_build_helpers import cli_build, image, layer_contents, ok, step_states


def _build(tmp_path, ctx) -> str:
    return ok(cli_build(tmp_path, ctx, "-t", "app")).output


def _last_layer(tmp_path) -> dict[str, bytes]:
    layout, _, manifest, _ = image(tmp_path, "app")
    return layer_contents(layout, manifest["layers"][-1])


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
