"""FROM resolution: oci:PATH[:TAG], tags of the output layout, scratch, clear misses."""

import pytest

from orca.cache import CacheStore
from orca.errors import BuildError
from orca.resolve import Resolver
from umoci_py import refs


def test_oci_path_tag_imports_blobs(tmp_path, busybox_layout):
    store = CacheStore(tmp_path / "c")
    r = Resolver(tmp_path / "out", store.layout, refs.host_platform())
    img = r.resolve(f"oci:{busybox_layout}:latest")
    assert img.key.startswith("image:sha256:")
    assert img.layers and all(store.layout.has_blob(d["digest"]) for d in img.layers)
    assert img.config["rootfs"]["diff_ids"]


def test_tag_of_output_layout_and_scratch(tmp_path, debian_layout):
    store = CacheStore(tmp_path / "c")
    r = Resolver(debian_layout, store.layout, refs.host_platform())
    assert r.resolve("debian:bookworm").key == r.resolve("bookworm").key
    s = r.resolve("scratch")
    assert s.layers == [] and any(e.startswith("PATH=") for e in s.config["config"]["Env"])


def test_missing_base_names_what_was_looked_for(tmp_path, busybox_layout):
    store = CacheStore(tmp_path / "c")
    r = Resolver(busybox_layout, store.layout, refs.host_platform())
    with pytest.raises(BuildError, match=r"base image alpine:3 not found: no tag 'alpine:3', '3', 'alpine' in layout"):
        r.resolve("alpine:3")
    with pytest.raises(BuildError, match="base image oci:/nonexistent"):
        r.resolve("oci:/nonexistent:x")
