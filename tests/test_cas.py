"""cas.Layout: layout files, atomic blob writes, verified reads, index updates."""

import hashlib
import json
import os
import subprocess

import pytest

from umoci_py import mediatypes
from umoci_py.cas import Layout
from umoci_py.errors import BlobError, LayoutError, SchemaError

EMPTY_INDEX = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}\n'


def _hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(layout: Layout) -> list[str]:
    return [p.name for p in layout.path.iterdir() if p.name.startswith(".umoci-")]


def test_init_writes_umoci_layout(tmp_path):
    layout = Layout.init(tmp_path / "img")
    assert (layout.path / "oci-layout").read_bytes() == b'{"imageLayoutVersion":"1.0.0"}\n'
    assert (layout.path / "index.json").read_bytes() == EMPTY_INDEX
    assert (layout.path / "blobs" / "sha256").is_dir()
    assert _leftovers(layout) == []
    result = subprocess.run(["umoci", "ls", "--layout", str(layout.path)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == ""


def test_init_refuses_existing_path(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "keep").write_text("x")
    with pytest.raises(LayoutError, match="already exists"):
        Layout.init(tmp_path / "img")
    assert [p.name for p in (tmp_path / "img").iterdir()] == ["keep"]


def test_open_checks_layout(tmp_path):
    layout = Layout.init(tmp_path / "img")
    Layout.open(layout.path)
    (layout.path / "oci-layout").write_text('{"imageLayoutVersion":"2.0.0"}')
    with pytest.raises(LayoutError, match=r"oci-layout: unsupported imageLayoutVersion '2.0.0'"):
        Layout.open(layout.path)
    (layout.path / "oci-layout").write_text('{"imageLayoutVersion":1}')
    with pytest.raises(SchemaError, match=r"oci-layout: imageLayoutVersion: 1 is not of type 'string'"):
        Layout.open(layout.path)
    (layout.path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout.path / "index.json").unlink()
    with pytest.raises(LayoutError, match="index.json"):
        Layout.open(layout.path)
    with pytest.raises(LayoutError, match="no such directory"):
        Layout.open(tmp_path / "missing")


def test_open_refuses_symlinked_blobs(tmp_path):
    layout = Layout.init(tmp_path / "img")
    (layout.path / "blobs").rename(tmp_path / "elsewhere")
    (layout.path / "blobs").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LayoutError, match="symlink"):
        Layout.open(layout.path)


def test_put_blob_stores_content_addressed(tmp_path):
    layout = Layout.init(tmp_path / "img")
    digest, size = layout.put_blob(b"hello")
    assert (digest, size) == ("sha256:" + _hex(b"hello"), 5)
    assert (layout.path / "blobs" / "sha256" / _hex(b"hello")).read_bytes() == b"hello"
    assert layout.has_blob(digest) and layout.list_blobs() == {digest}
    assert layout.put_blob(b"hello") == (digest, size)
    assert _leftovers(layout) == []
    layout.delete_blob(digest)
    layout.delete_blob(digest)
    assert not layout.has_blob(digest) and layout.list_blobs() == set()


def test_blob_writer_streams_and_aborts_cleanly(tmp_path):
    layout = Layout.init(tmp_path / "img")
    with layout.blob_writer() as w:
        for chunk in (b"a" * 100000, b"b" * 5):
            w.write(chunk)
    assert w.size == 100005 and w.digest == "sha256:" + _hex(b"a" * 100000 + b"b" * 5)
    assert layout.read_blob(w.digest, w.size).endswith(b"abbbbb")
    with pytest.raises(RuntimeError):
        with layout.blob_writer() as w2:
            w2.write(b"partial")
            raise RuntimeError("boom")
    assert layout.list_blobs() == {w.digest}
    assert _leftovers(layout) == []



def test_blob_writer_with_expect_stores_only_the_promised_blob(tmp_path):
    layout = Layout.init(tmp_path / "img")
    data = b"promised content"
    good = ("sha256:" + _hex(data), len(data))
    with layout.blob_writer(expect=good) as w:
        w.write(data)
    assert (w.digest, w.size) == good and layout.read_blob(*good) == data
    for expect, problem in (((good[0], len(data) + 1), "size mismatch"),
                            (("sha256:" + _hex(b"other"), len(data)), "digest mismatch")):
        with pytest.raises(BlobError, match=f"{layout.path}: blob {expect[0]}: {problem}"):
            with layout.blob_writer(expect=expect) as w2:
                w2.write(data[:-1] + b"!" if problem == "digest mismatch" else data)
    assert layout.list_blobs() == {good[0]}  # not even under the wrong content's own digest
    assert _leftovers(layout) == []

def test_verified_reads(tmp_path):
    layout = Layout.init(tmp_path / "img")
    digest, size = layout.put_blob(b"content")
    path = layout.path / "blobs" / "sha256" / digest.split(":")[1]
    with layout.open_blob(digest, size) as f:
        assert f.read(3) == b"con" and f.read() == b"tent"
    with pytest.raises(BlobError, match=rf"^{path}: verified reader size mismatch: expected 8 bytes, read 7$"):
        layout.read_blob(digest, size + 1)
    with pytest.raises(BlobError, match=rf"^{path}: verified reader size mismatch"):
        layout.read_blob(digest, size - 1)
    with pytest.raises(BlobError, match="non-negative"):
        layout.open_blob(digest, -1)
    path.write_bytes(b"CONTENT")
    with pytest.raises(BlobError, match=rf"^{path}: verified reader digest mismatch: expected {digest}, got sha256:"):
        layout.read_blob(digest, size)
    with pytest.raises(BlobError, match="not found"):
        layout.read_blob("sha256:" + "0" * 64, 1)
    with pytest.raises(BlobError, match="invalid digest"):
        layout.read_blob("sha256:ZZ", 1)


def test_json_blobs_are_schema_checked(tmp_path):
    layout = Layout.init(tmp_path / "img")
    with pytest.raises(SchemaError, match=r"new config blob .*: 'rootfs' is a required property"):
        layout.put_json({"architecture": "amd64", "os": "linux"}, "config")
    assert layout.list_blobs() == set()
    digest, size = layout.put_blob(b'{"architecture":"amd64","os":"linux"}\n')
    desc = {"mediaType": mediatypes.CONFIG, "digest": digest, "size": size}
    with pytest.raises(SchemaError, match=rf"blobs/sha256/{digest[7:]}: 'rootfs' is a required property"):
        layout.read_json(desc, "config")
    digest, size = layout.put_blob(b"{not json")
    with pytest.raises(SchemaError, match="invalid JSON"):
        layout.read_json({"mediaType": mediatypes.CONFIG, "digest": digest, "size": size}, "config")
    with pytest.raises(SchemaError, match=r"descriptor: size: -1 is less than the minimum of 0"):
        layout.read_json({"mediaType": mediatypes.CONFIG, "digest": digest, "size": -1}, "config")


def test_update_index_writes_atomically_or_not_at_all(tmp_path):
    layout = Layout.init(tmp_path / "img")
    digest, size = layout.put_blob(b"x")
    entry = {"size": size, "digest": digest, "mediaType": mediatypes.MANIFEST}
    with pytest.raises(RuntimeError):
        with layout.update_index() as index:
            index["manifests"].append(entry)
            raise RuntimeError("abort")
    assert (layout.path / "index.json").read_bytes() == EMPTY_INDEX
    with pytest.raises(SchemaError, match=r"index.json \(update\): manifests\[0\].digest"):
        with layout.update_index() as index:
            index["manifests"].append(dict(entry, digest="sha256:nope"))
    assert (layout.path / "index.json").read_bytes() == EMPTY_INDEX
    with layout.update_index() as index:
        del index["mediaType"]
        index["manifests"].append(entry)
    # Go field order for the index and its descriptors, mediaType always set.
    assert (layout.path / "index.json").read_bytes() == (
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":'
        b'[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"' + digest.encode() +
        b'","size":1}]}\n')
    assert _leftovers(layout) == []


def test_reads_fixture_layouts(debian_layout_ro):
    layout = Layout.open(debian_layout_ro)
    entry = layout.read_index()["manifests"][0]
    manifest = layout.read_json(entry, "manifest")
    config = layout.read_json(manifest["config"], "config")
    assert config["rootfs"]["type"] == "layers"
    layer = manifest["layers"][0]
    with layout.open_blob(layer["digest"], layer["size"]) as f:
        total = sum(len(chunk) for chunk in iter(lambda: f.read(1 << 20), b""))
    assert total == layer["size"]


def test_blob_files_are_readable_by_umoci(tmp_path):
    layout = Layout.init(tmp_path / "img")
    digest, size = layout.put_blob(b"payload")
    mode = os.stat(layout.path / "blobs" / "sha256" / digest[7:]).st_mode & 0o777
    assert mode == 0o644
    entry = {"mediaType": "application/octet-stream", "digest": digest, "size": size,
             "annotations": {"org.opencontainers.image.ref.name": "raw"}}
    with layout.update_index() as index:
        index["manifests"].append(entry)
    result = subprocess.run(["umoci", "ls", "--layout", str(layout.path)], capture_output=True, text=True)
    assert result.stdout == "raw\n"
    assert json.loads((layout.path / "index.json").read_text())["manifests"] == [entry]
