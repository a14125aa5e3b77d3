"""Layers compressed while later steps run (orca.layerjobs): a cache record
names only stored blobs, a record waiting for its layers is found by the same
build, and a layer that fails to compress fails the build where it is needed."""

import threading

import pytest

from orca.cache import CacheStore, step_key
from orca.errors import BuildError
from orca.layerjobs import LayerJobs, is_pending

DIFF = "sha256:" + "d" * 64


def _stored(store, data: bytes, gate: threading.Event | None = None):
    """A layer's stored(): data stored as its blob once gate is set, and the descriptor."""
    def stored():
        if gate is not None:
            assert gate.wait(30)
        digest, size = store.layout.put_blob(data)
        return {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size}
    return stored


def test_record_is_written_once_its_layer_is_stored_and_names_the_blob(tmp_path):
    store = CacheStore(tmp_path / "c")
    jobs = LayerJobs()
    gate = threading.Event()
    placeholder = jobs.submit(DIFF, _stored(store, b"layer bytes", gate))
    assert is_pending(placeholder)
    key = step_key("p", {"kind": "RUN"}, {}, "linux/amd64")
    config = {"rootfs": {"type": "layers", "diff_ids": [DIFF]}}
    jobs.record(store, key, "RUN x", {"config": config, "layers": [placeholder]}, key)
    config["rootfs"]["diff_ids"].append("changed by a later step")  # the record keeps what it was given

    assert store.get(key) is None                      # nothing on disk names a missing blob
    waiting = jobs.get(store, key)                     # but this build finds it
    assert waiting["image"]["layers"] == [placeholder]
    assert waiting["image"]["config"]["rootfs"]["diff_ids"] == [DIFF]

    gate.set()
    jobs.finish()
    record = store.get(key)
    (layer,) = record["image"]["layers"]
    assert not is_pending(layer)
    assert store.layout.has_blob(layer["digest"]) and layer["size"] == len(b"layer bytes")
    assert record["image"]["config"]["rootfs"]["diff_ids"] == [DIFF]
    assert jobs.resolve([placeholder]) == [layer]


def test_a_record_without_pending_layers_is_written_at_once(tmp_path):
    store = CacheStore(tmp_path / "c")
    digest, size = store.layout.put_blob(b"x")
    key = step_key("q", {}, {}, "linux/amd64")
    LayerJobs().record(store, key, "COPY", {"config": {}, "layers": [{"mediaType": "m", "digest": digest,
                                                                     "size": size}]}, key)
    assert store.get(key)["image"]["layers"][0]["digest"] == digest


def test_a_failed_layer_raises_where_it_is_needed_and_its_records_are_never_written(tmp_path):
    store = CacheStore(tmp_path / "c")
    jobs = LayerJobs()

    def fail():
        raise BuildError("no space left for the layer")

    placeholder = jobs.submit(DIFF, fail)
    key = step_key("r", {}, {}, "linux/amd64")
    jobs.record(store, key, "RUN y", {"config": {}, "layers": [placeholder]}, key)
    jobs.finish()
    with pytest.raises(BuildError, match="no space left"):
        jobs.resolve([placeholder])
    assert store.get(key) is None and jobs.get(store, key) is None
