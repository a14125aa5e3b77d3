"""refs: tag syntax, resolution through indexes by platform, tagging, gc.

Cross-checked with umoci 0.4.7, skopeo and oci-image-tool.
"""

import gzip
import hashlib
import io
import json
import multiprocessing
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from umoci_py import mediatypes, refs
from umoci_py.cas import Layout
from umoci_py.errors import BlobError, RefError, UsageError
from umoci_py.refs import Platform
from umoci_py_helpers import umoci


def _layer(payload: bytes) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    return gzip.compress(raw.getvalue(), mtime=0), diff_id


def make_image(layout: Layout, arch="amd64", variant=None, payload=b"hi\n") -> dict:
    """Put a one-layer image; return its manifest descriptor with platform."""
    blob, diff_id = _layer(payload)
    ldigest, lsize = layout.put_blob(blob)
    config = {"created": "2025-01-02T03:04:05Z", "architecture": arch, "os": "linux",
              "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Volumes": {"/v w": {}, "/data": {}}},
              "rootfs": {"type": "layers", "diff_ids": [diff_id]},
              "history": [{"created": "2025-01-02T03:04:05Z", "created_by": "test add"},
                          {"created": "2025-01-02T03:04:06Z", "created_by": "test config",
                           "comment": "c", "empty_layer": True}]}
    if variant:
        config["variant"] = variant
    cdigest, csize = layout.put_json(config, "config")
    manifest = {"schemaVersion": 2, "mediaType": mediatypes.MANIFEST,
                "config": {"mediaType": mediatypes.CONFIG, "digest": cdigest, "size": csize},
                "layers": [{"mediaType": mediatypes.LAYER_GZIP, "digest": ldigest, "size": lsize}]}
    mdigest, msize = layout.put_json(manifest, "manifest")
    plat = {"architecture": arch, "os": "linux", **({"variant": variant} if variant else {})}
    return {"mediaType": mediatypes.MANIFEST, "digest": mdigest, "size": msize, "platform": plat}


def make_index(layout: Layout, descriptors: list[dict]) -> dict:
    digest, size = layout.put_json({"schemaVersion": 2, "mediaType": mediatypes.INDEX,
                                    "manifests": descriptors}, "index")
    return {"mediaType": mediatypes.INDEX, "digest": digest, "size": size}


# -- argument syntax ---------------------------------------------------------

def test_parse_image_arg():
    assert refs.parse_image_arg("dir") == ("dir", "latest")
    assert refs.parse_image_arg("dir:v1.0") == ("dir", "v1.0")
    assert refs.parse_image_arg("dir:a:b@c/d--e") == ("dir", "a:b@c/d--e")
    with pytest.raises(UsageError, match="path cannot be empty"):
        refs.parse_image_arg(":tag")
    for bad in ("dir:", "dir:-x", "dir:a..b", "dir:a/", "dir:a b", "dir:a---b"):
        with pytest.raises(RefError, match="invalid tag"):
            refs.parse_image_arg(bad)


def test_check_layout_arg():
    refs.check_layout_arg("some/dir")
    with pytest.raises(UsageError, match="empty"):
        refs.check_layout_arg("")
    with pytest.raises(UsageError, match="cannot contain ':'"):
        refs.check_layout_arg("dir:tag")


def test_platforms(monkeypatch):
    for machine, expected in (("x86_64", Platform("linux", "amd64")), ("aarch64", Platform("linux", "arm64")),
                              ("armv7l", Platform("linux", "arm", "v7")), ("i686", Platform("linux", "386"))):
        monkeypatch.setattr(refs, "_machine", lambda m=machine: m)
        assert refs.host_platform() == expected
    assert refs.parse_platform("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    assert str(refs.parse_platform("linux/amd64")) == "linux/amd64"
    for bad in ("linux", "linux//v8", "a/b/c/d"):
        with pytest.raises(UsageError, match="os/arch"):
            refs.parse_platform(bad)


# -- resolve -----------------------------------------------------------------

def test_resolve_fixture_and_missing_tag(busybox_layout):
    layout = Layout.open(busybox_layout)
    path = refs.resolve(layout, "latest")
    assert len(path) == 1 and path[0]["mediaType"] == mediatypes.MANIFEST
    with pytest.raises(RefError, match="tag not found: nope"):
        refs.resolve(layout, "nope")


def test_resolve_multi_platform_index(tmp_path, monkeypatch):
    layout = Layout.init(tmp_path / "img")
    amd = make_image(layout, "amd64", payload=b"amd")
    arm = make_image(layout, "arm64", "v8", payload=b"arm")
    armv7 = make_image(layout, "arm", "v7", payload=b"armv7")
    refs.set_tag(layout, "multi", make_index(layout, [amd, arm, armv7]))
    root = layout.read_index()["manifests"][0]
    assert refs.resolve(layout, "multi", Platform("linux", "arm64")) == [root, arm]
    assert refs.resolve(layout, "multi", Platform("linux", "arm", "v7")) == [root, armv7]
    monkeypatch.setattr(refs, "_machine", lambda: "x86_64")
    assert refs.resolve(layout, "multi") == [root, amd]
    with pytest.raises(RefError, match="no manifest for platform linux/s390x in tag 'multi'"):
        refs.resolve(layout, "multi", Platform("linux", "s390x"))
    # umoci itself gives up on such an index.
    assert subprocess.run(["umoci", "stat", "--image", f"{layout.path}:multi"],
                          capture_output=True).returncode != 0


def test_resolve_nested_and_ambiguous(tmp_path):
    layout = Layout.init(tmp_path / "img")
    one = make_image(layout, "amd64", payload=b"1")
    two = make_image(layout, "amd64", payload=b"2")
    inner = make_index(layout, [one])
    refs.set_tag(layout, "nested", make_index(layout, [inner]))
    root = layout.read_index()["manifests"][0]
    assert refs.resolve(layout, "nested") == [root, inner, one]
    refs.set_tag(layout, "twice", make_index(layout, [one, two]))
    with pytest.raises(RefError, match=r"tag is ambiguous: twice \(2 manifests for platform linux/amd64\)"):
        refs.resolve(layout, "twice", Platform("linux", "amd64"))
    refs.set_tag(layout, "single", one)
    with pytest.raises(RefError, match="no manifest for platform linux/arm64"):
        refs.resolve(layout, "single", Platform("linux", "arm64"))


def test_resolve_skips_non_image_targets(tmp_path):
    layout = Layout.init(tmp_path / "img")
    digest, size = layout.put_blob(b"not an image")
    refs.set_tag(layout, "blob", {"mediaType": "application/octet-stream", "digest": digest, "size": size})
    with pytest.raises(RefError, match="does not point to an image manifest"):
        refs.resolve(layout, "blob")


def test_resolve_detects_corrupt_index_blob(tmp_path):
    layout = Layout.init(tmp_path / "img")
    index = make_index(layout, [make_image(layout)])
    refs.set_tag(layout, "t", index)
    layout.blob_path(index["digest"]).write_bytes(b'{"schemaVersion":2,"manifests":[]}   \n\n\n\n')
    with pytest.raises(BlobError, match="verified reader"):
        refs.resolve(layout, "t")


# -- tags --------------------------------------------------------------------

def test_set_and_remove_tags_interoperate_with_umoci(tmp_path):
    layout = Layout.init(tmp_path / "img")
    a, b = make_image(layout, payload=b"a"), make_image(layout, payload=b"b")
    refs.set_tag(layout, "one", a)
    refs.set_tag(layout, "two", a)
    refs.set_tag(layout, "one", b)
    assert refs.list_tags(layout) == ["two", "one"]
    assert umoci("ls", "--layout", layout.path).stdout == "two\none\n"
    assert refs.resolve(layout, "one")[-1]["digest"] == b["digest"]
    entries = layout.read_index()["manifests"]
    assert [e["annotations"][refs.REF_NAME] for e in entries] == ["two", "one"]
    umoci("tag", "--image", f"{layout.path}:two", "three")
    assert refs.list_tags(layout) == ["two", "one", "three"]
    refs.remove_tag(layout, "two")
    refs.remove_tag(layout, "never-existed")
    assert refs.list_tags(layout) == ["one", "three"]
    with pytest.raises(RefError, match="invalid tag"):
        refs.set_tag(layout, "bad tag", a)


def test_peers_accept_our_layout(tmp_path):
    layout = Layout.init(tmp_path / "img")
    refs.set_tag(layout, "v1", make_image(layout))
    subprocess.run(["oci-image-tool", "validate", "--type", "image", "--ref", "name=v1", str(layout.path)],
                   check=True, capture_output=True)
    inspect = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{layout.path}:v1"], check=True,
                                        capture_output=True, text=True).stdout)
    assert inspect["Architecture"] == "amd64" and len(inspect["Layers"]) == 1
    bundle = tmp_path / "bundle"
    umoci("unpack", "--rootless", "--image", f"{layout.path}:v1", str(bundle))
    assert (bundle / "rootfs" / "hello.txt").read_bytes() == b"hi\n"


# -- gc ----------------------------------------------------------------------

def test_gc_removes_only_unreachable_blobs(tmp_path):
    layout = Layout.init(tmp_path / "img")
    tagged = make_index(layout, [make_image(layout, payload=b"kept")])
    refs.set_tag(layout, "t", tagged)
    untagged = make_image(layout, payload=b"untagged but listed")
    with layout.update_index() as index:
        index["manifests"].append(untagged)
    before = layout.list_blobs()
    garbage = {layout.put_blob(b"garbage")[0]}
    dropped = make_image(layout, payload=b"dropped")
    garbage |= layout.list_blobs() - before - garbage
    assert dropped["digest"] in garbage and len(garbage) == 4
    stale = layout.path / ".umoci-stale"
    (stale / "sub").mkdir(parents=True)
    (layout.path / ".internal").write_text("stray")
    assert refs.gc(layout) == sorted(garbage)
    assert layout.list_blobs() == before
    assert not stale.exists() and (layout.path / ".internal").exists()
    assert refs.gc(layout) == []
    # umoci agrees that nothing more is garbage and the image is intact.
    umoci("gc", "--layout", str(layout.path))
    assert layout.list_blobs() == before
    assert refs.resolve(layout, "t", Platform("linux", "amd64"))


def test_gc_aborts_on_corrupt_reachable_blob(tmp_path):
    layout = Layout.init(tmp_path / "img")
    image = make_image(layout)
    refs.set_tag(layout, "t", image)
    garbage, _ = layout.put_blob(b"garbage")
    layout.blob_path(image["digest"]).write_bytes(b"{}")
    with pytest.raises(BlobError, match="verified reader size mismatch"):
        refs.gc(layout)
    assert layout.has_blob(garbage)


def _set_tag_worker(path: str, tag: str, start) -> None:
    layout = Layout.open(path)
    desc = make_image(layout, payload=tag.encode())
    start.wait()
    refs.set_tag(layout, tag, desc)


def test_concurrent_set_tag_loses_no_tag(tmp_path):
    layout = Layout.init(tmp_path / "img")
    start = multiprocessing.Event()
    tags = [f"t{i}" for i in range(8)]
    procs = [multiprocessing.Process(target=_set_tag_worker, args=(str(layout.path), t, start), daemon=True)
             for t in tags]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0] * len(procs)
    assert sorted(refs.list_tags(layout)) == tags
    assert refs.gc(layout) == []


def _held_writer(path: str, tag: str, written_fd: int, go_fd: int) -> None:
    layout = Layout.open(path)
    with layout.writer():
        desc = make_image(layout, payload=tag.encode())
        os.write(written_fd, b"w")
        os.read(go_fd, 1)  # one byte per writer from the parent releases it
        refs.set_tag(layout, tag, desc)


def _gc_worker(path: str, out) -> None:
    out.put(refs.gc(Layout.open(path)))


def _waiting_flock(pid: int) -> bool:
    """Is ``pid`` blocked waiting for a flock (a '->' line in /proc/locks)?"""
    return any("->" in line and "FLOCK" in line and line.split()[-4] == str(pid)
               for line in Path("/proc/locks").read_text().splitlines())


def test_gc_beside_writers_deletes_none_of_their_blobs(tmp_path):
    # Plain pipes, not multiprocessing.Event (whose notify_all waits for every
    # sleeper and hung under load): the parent writes one byte per writer.
    layout = Layout.init(tmp_path / "img")
    garbage, _ = layout.put_blob(b"garbage")
    go_r, go_w = os.pipe()
    out = multiprocessing.Queue()
    writers = []
    gc_proc = multiprocessing.Process(target=_gc_worker, args=(str(layout.path), out), daemon=True)
    try:
        for tag in ("w1", "w2", "w3"):
            written_r, written_w = os.pipe()
            proc = multiprocessing.Process(target=_held_writer,
                                           args=(str(layout.path), tag, written_w, go_r), daemon=True)
            proc.start()
            os.close(written_w)
            writers.append(proc)
            assert os.read(written_r, 1) == b"w", "writer did not start"
            os.close(written_r)
        gc_proc.start()
        # Release the writers only once gc is provably queued on the lock.
        while not _waiting_flock(gc_proc.pid):
            assert gc_proc.is_alive(), "gc finished while writers held the layout"
            time.sleep(0.01)
    finally:
        os.write(go_w, b"g" * len(writers))
        for proc in writers:
            proc.join()
        os.close(go_w)
        os.close(go_r)
    assert [p.exitcode for p in writers] == [0, 0, 0]
    removed = out.get(timeout=60)
    gc_proc.join()
    assert removed == [garbage]
    for tag in ("w1", "w2", "w3"):
        manifest_desc = refs.resolve(layout, tag)[-1]
        manifest = layout.read_json(manifest_desc, "manifest")
        layout.read_json(manifest["config"], "config")
        layout.read_blob(manifest["layers"][0]["digest"], manifest["layers"][0]["size"])
