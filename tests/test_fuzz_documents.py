"""Fuzzing the JSON document readers (schemas, Layout.read_json, index and
umoci.json) and the user.rootlesscontainers xattr codec."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from fuzz_settings import bounded
from hostile.corpus import INDEX, json_bytes, write_image
from umoci_py import rootless, schemas
from umoci_py.bundle import read_umoci_json
from umoci_py.cas import Layout
from umoci_py.errors import LayerError, UmociError
from umoci_py.unpriv import remove_tree

KEYS = st.sampled_from(["schemaVersion", "mediaType", "digest", "size", "manifests", "layers", "config",
                        "annotations", "rootfs", "diff_ids", "type", "os", "architecture", "platform",
                        "urls", "history", "created", "Env", "User", "imageLayoutVersion", "umoci_version",
                        "from_descriptor_path", "descriptor_walk", "map_options", "x"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                    st.text(max_size=20), st.sampled_from(["sha256:" + "a" * 64, "sha512:x", INDEX, "layers",
                                                           "application/vnd.oci.image.manifest.v1+json"]))
DOCS = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(KEYS, inner, max_size=6)), max_leaves=25)


@bounded(800)
@given(DOCS, st.sampled_from(schemas.KINDS))
def test_fuzz_schemas(doc, kind):
    try:
        schemas.validate(doc, kind, "fuzz.json")
    except UmociError as err:
        assert str(err).startswith("fuzz.json")


@bounded(300)
@given(st.one_of(DOCS.map(json_bytes), st.binary(max_size=200),
                 st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n)),
       st.sampled_from(["manifest", "config", "index"]), st.data())
def test_fuzz_read_json_and_index(blob, kind, data):
    base = Path(tempfile.mkdtemp(prefix="fuzz-json-"))
    try:
        write_image(base / "layout", "t", [])
        layout = Layout.open(base / "layout")
        digest, size = layout.put_blob(blob)
        desc = data.draw(st.one_of(st.just({"mediaType": "application/json", "digest": digest, "size": size}),
                                   DOCS))
        for call in (lambda: layout.read_json(desc, kind),
                     lambda: ((base / "layout/index.json").write_bytes(blob), Layout.open(base / "layout")
                              .read_index())):
            try:
                call()
            except UmociError:
                pass
        (base / "bundle").mkdir()
        (base / "bundle/umoci.json").write_bytes(blob)
        try:
            read_umoci_json(base / "bundle")
        except UmociError:
            pass
    finally:
        remove_tree(base)


@bounded(1000)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_fuzz_owner_roundtrip(uid, gid):
    payload = rootless.encode_owner(uid, gid)
    assert rootless.resolve_owner(payload, 0, 0) == (uid if uid != rootless.NOOP else 0,
                                                     gid if gid != rootless.NOOP else 0) or uid == 0 == gid


@bounded(1000)
@given(st.binary(max_size=40))
def test_fuzz_owner_decode(payload):
    """A corrupt xattr is a LayerError (generate adds the file's name); it
    decodes to 32-bit ids otherwise."""
    try:
        uid, gid = rootless.decode_owner(payload)
    except LayerError:
        return
    assert 0 <= uid <= 0xFFFFFFFF and 0 <= gid <= 0xFFFFFFFF
