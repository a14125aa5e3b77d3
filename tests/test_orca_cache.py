"""Step keys and the cache store."""

from orca.cache import CacheStore, step_key


def test_key_depends_on_parent_instruction_env_platform_content_not_proxies():
    base = step_key("p", {"kind": "RUN", "argv": ["a"]}, {"A": "1", "http_proxy": "x"}, "linux/amd64", "c")
    assert base == step_key("p", {"kind": "RUN", "argv": ["a"]}, {"A": "1", "HTTP_PROXY": "y"}, "linux/amd64", "c")
    others = [
        step_key("q", {"kind": "RUN", "argv": ["a"]}, {"A": "1"}, "linux/amd64", "c"),
        step_key("p", {"kind": "RUN", "argv": ["b"]}, {"A": "1"}, "linux/amd64", "c"),
        step_key("p", {"kind": "RUN", "argv": ["a"]}, {"A": "2"}, "linux/amd64", "c"),
        step_key("p", {"kind": "RUN", "argv": ["a"]}, {"A": "1"}, "linux/arm64", "c"),
        step_key("p", {"kind": "RUN", "argv": ["a"]}, {"A": "1"}, "linux/amd64", "d"),
    ]
    assert base not in others and len(set(others)) == len(others)


def test_store_roundtrip_ls_and_prune(tmp_path):
    store = CacheStore(tmp_path / "c")
    digest, size = store.layout.put_blob(b"layer")
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size}
    key = step_key("p", {"kind": "COPY"}, {}, "linux/amd64")
    assert store.get(key) is None
    store.put(key, "COPY a /b", {"config": {"os": "linux"}, "layers": [layer]})
    again = CacheStore(tmp_path / "c")  # another build sharing the directory
    assert again.get(key)["image"]["layers"] == [layer]
    assert [r["description"] for r in again.list()] == ["COPY a /b"]
    (again.mount_dir("apt") / "f").write_text("x")
    assert again.prune() == (1, 1)
    assert again.get(key) is None and not again.layout.has_blob(digest)
    assert list(again.mounts.iterdir()) == []


def test_record_whose_blob_vanished_is_a_miss(tmp_path):
    store = CacheStore(tmp_path / "c")
    digest, size = store.layout.put_blob(b"layer")
    key = step_key("p", {}, {}, "x")
    store.put(key, "RUN x", {"config": {}, "layers": [{"mediaType": "m", "digest": digest, "size": size}]})
    store.layout.delete_blob(digest)
    assert store.get(key) is None
