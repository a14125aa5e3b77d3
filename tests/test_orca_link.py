"""COPY --link / ADD --link: a layer made apart from the stage, cached whatever it lands on."""

from __future__ import annotations

import tarfile
import io

from orca_build_helpers import build, context, layer_files, manifest, step_states
from umoci_py_helpers import umoci_unpack

DOCKERFILE = """\
FROM BASE
RUN mkdir -p /app && echo VERSION > /app/old.txt && chmod 700 /app
COPY --link --chown=1000:1001 hello.txt /app/
COPY plain.txt /plain/
RUN cat /app/old.txt /app/hello.txt > /seen && stat -c '%a %u:%g' /app /app/hello.txt >> /seen
"""
LINK = "COPY --link --chown=1000:1001 hello.txt /app/"
PLAIN = "COPY plain.txt /plain/"


def _context(tmp_path, busybox_layout, version: str):
    ctx = context(tmp_path, busybox_layout, DOCKERFILE.replace("VERSION", version))
    (ctx / "hello.txt").write_text("hello\n")
    (ctx / "plain.txt").write_text("plain\n")
    return ctx


def _link_layer(layout, man, config) -> tuple[dict, dict]:
    """(descriptor, files) of the layer whose history is the --link COPY."""
    made = [h for h in config["history"] if not h.get("empty_layer")]
    index = next(i for i, h in enumerate(made) if h["created_by"].startswith("COPY --link"))
    desc = man["layers"][len(man["layers"]) - len(made) + index]
    return desc, layer_files(layout, desc)


def test_link_layer_holds_only_the_copied_files_and_the_stage_sees_them(tmp_path, busybox_layout):
    result, log, _ = build(tmp_path, _context(tmp_path, busybox_layout, "one"))
    assert not isinstance(result, Exception), log
    layout, man, config = manifest(tmp_path, result)
    desc, files = _link_layer(layout, man, config)
    # the destination existed in the base (with old.txt, mode 0700): the layer
    # is made in an empty directory, so neither the old file nor the root is in it
    assert set(files) == {"app", "app/hello.txt"}
    assert files["app/hello.txt"][1] == b"hello\n"
    assert (files["app/hello.txt"][0].uid, files["app/hello.txt"][0].gid) == (1000, 1001)
    assert files["app"][0].mode == 0o755
    assert config["history"][-3]["created_by"] == LINK + " # buildkit"
    # the next RUN ran on the base plus the linked layer
    seen = layer_files(layout, man["layers"][-1])["seen"][1].decode().splitlines()
    assert seen == ["one", "hello", "755 0:0", "644 1000:1001"]


def test_changing_the_base_keeps_the_link_copy_cached(tmp_path, busybox_layout):
    result, log, _ = build(tmp_path, _context(tmp_path, busybox_layout, "one"))
    assert not isinstance(result, Exception), log
    first, _ = _link_layer(*manifest(tmp_path, result))

    result, log, _ = build(tmp_path, _context(tmp_path, busybox_layout, "two"))
    assert not isinstance(result, Exception), log
    states = step_states(log)
    assert states[LINK] == "CACHED" and states[PLAIN] == "DONE", log
    layout, man, config = manifest(tmp_path, result)
    second, files = _link_layer(layout, man, config)
    assert second == first
    seen = layer_files(layout, man["layers"][-1])["seen"][1].decode().splitlines()
    assert seen[:2] == ["two", "hello"]


def test_umoci_unpacks_the_link_layer_over_the_base(tmp_path, busybox_layout):
    ctx = _context(tmp_path, busybox_layout, "one")
    (ctx / "Dockerfile").write_text(f"FROM oci:{busybox_layout}:latest\n"
                                    "RUN mkdir /app && echo old > /app/old.txt\n"
                                    "ADD --link data.tar /app/\n")
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tf:
        info = tarfile.TarInfo("sub/new.txt")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"new\n"))
    (ctx / "data.tar").write_bytes(data.getvalue())
    result, log, _ = build(tmp_path, ctx, tags=["app"])
    assert not isinstance(result, Exception), log
    layout, man, config = manifest(tmp_path, result)
    assert set(layer_files(layout, man["layers"][-1])) == {"app", "app/sub", "app/sub/new.txt"}
    bundle = tmp_path / "bundle"
    umoci_unpack(tmp_path / "out", "app", bundle)
    app = bundle / "rootfs" / "app"
    assert (app / "old.txt").read_text() == "old\n" and (app / "sub" / "new.txt").read_text() == "new\n"
