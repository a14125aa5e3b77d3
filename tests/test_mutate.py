"""Mutator: layers, history, annotations and commits through nested indexes."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from umoci_py import refs
from umoci_py.cas import Layout
from umoci_py.errors import UsageError
from umoci_py.mutate import HistoryOptions, Mutator, check_created, format_time_ns, pick_compression

from umoci_py_helpers import blob_path, config_of, layer_members, manifest_of


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_time_formatting_like_go():
    assert format_time_ns(0) == "1970-01-01T00:00:00Z"
    assert format_time_ns(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"
    assert check_created("2025-09-05T13:05:10.12345+10:00", "--created")
    with pytest.raises(UsageError, match="--created"):
        check_created("yesterday", "--created")
    with pytest.raises(UsageError):
        check_created("2025-13-45T00:00:00Z", "--created")


def test_history_entry_uses_source_date_epoch_and_flags():
    entry = HistoryOptions().entry("umoci repack", "me", environ={"SOURCE_DATE_EPOCH": "86400"})
    assert entry == {"created": "1970-01-02T00:00:00Z", "created_by": "umoci repack", "author": "me"}
    explicit = HistoryOptions(created="2020-01-01T00:00:00Z", comment="c", created_by="x")
    assert explicit.entry("y", empty_layer=True, environ={"SOURCE_DATE_EPOCH": "1"}) == {
        "created": "2020-01-01T00:00:00Z", "created_by": "x", "comment": "c", "empty_layer": True}
    assert HistoryOptions(no_history=True).entry("z") is None


def test_pick_compression_newest_known_never_none():
    assert pick_compression([]) == "gzip"
    lay = "application/vnd.oci.image.layer.v1.tar"
    assert pick_compression([{"mediaType": lay + "+zstd"}, {"mediaType": lay}]) == "zstd"
    assert pick_compression([{"mediaType": lay}]) == "gzip"


@pytest.mark.parametrize("algorithm,suffix", [("zstd", "+zstd"), ("none", ""), ("auto", "+gzip")])
def test_add_layer_records_diff_id_and_compression(busybox_layout, algorithm, suffix):
    layout = Layout.open(busybox_layout)
    raw = _tar({"hello.txt": b"hi\n"})
    mut = Mutator(layout, refs.resolve(layout, "latest"))
    desc = mut.add_layer(io.BytesIO(raw), {"created_by": "test"}, algorithm)
    refs.set_tag(layout, "latest", mut.commit())
    assert desc["mediaType"] == "application/vnd.oci.image.layer.v1.tar" + suffix
    config = config_of(busybox_layout, "latest")
    assert config["rootfs"]["diff_ids"][-1] == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert config["history"][-1] == {"created_by": "test"}
    top = manifest_of(busybox_layout, "latest")["layers"][-1]
    assert [m.name for m in layer_members(busybox_layout, top)] == ["hello.txt"]
    if suffix:
        assert top["annotations"]["ci.umo.uncompressed_blob_size"] == str(len(raw))


def test_commit_rewrites_parent_indexes(busybox_layout):
    layout = Layout.open(busybox_layout)
    manifest_desc = refs.resolve(layout, "latest")[0]
    child = {k: manifest_desc[k] for k in ("mediaType", "digest", "size")}
    child["platform"] = {"os": "linux", "architecture": "amd64"}
    inner = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [child]}
    digest, size = layout.put_json(inner, "index")
    refs.set_tag(layout, "multi", {"mediaType": "application/vnd.oci.image.index.v1+json",
                                   "digest": digest, "size": size})
    mut = Mutator(layout, refs.resolve(layout, "multi", refs.parse_platform("linux/amd64")))
    mut.set_annotations({"k": "v"})
    root = mut.commit()
    refs.set_tag(layout, "multi", root)
    assert root["digest"] != digest
    new_inner = layout.read_json(root, "index")
    assert new_inner["manifests"][0]["platform"] == child["platform"]
    new_manifest = layout.read_json(new_inner["manifests"][0], "manifest")
    assert new_manifest["annotations"] == {"k": "v"}
    assert blob_path(busybox_layout, manifest_desc["digest"]).exists()  # old image untouched
