"""`umoci-py stat`: the exact text and JSON umoci 0.6 prints, through the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import tarfile

import pytest

from umoci_py_helpers import assert_one_line_error, blob_path, manifest_of, umoci, umoci_py

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"


def _entry(layout, tag) -> dict:
    index = json.loads((layout / "index.json").read_text())
    return next(m for m in index["manifests"]
                if m["annotations"]["org.opencontainers.image.ref.name"] == tag)


@pytest.fixture
def image(tmp_path):
    """An image with every kind of value umoci's stat quotes or lists."""
    layout = tmp_path / "img"
    umoci_py("init", "--layout", layout)
    umoci_py("new", "--image", f"{layout}:t", env={"SOURCE_DATE_EPOCH": "1000"})
    umoci_py("config", "--image", f"{layout}:t", "--author", "Aleksa Sarai <cyphar@cyphar.com>",
             "--config.volume", "/some nutty/path name/ here", "--config.volume", "/volume",
             "--config.exposedports", "8080/tcp", "--config.exposedports", "2000",
             "--config.exposedports", "1234/tcp", "--config.stopsignal", "SIGUSR1",
             "--config.label", "com.example.empty=", "--config.label", "com.example.list=a,b",
             "--config.label", "tab\tkey=x\ny",
             "--config.cmd", "/this is a file with spaces", "--config.cmd", "-v",
             "--config.env", "A=1", "--config.workingdir", "/w", "--os", "linux",
             "--architecture", "arm", "--platform.variant", "v7", "--manifest.annotation", "k=v",
             "--history.created", "2025-01-02T03:04:05.500+00:00",
             "--history.created_by", 'sh -c "x, y"', "--history.comment", "a comment")
    content = tmp_path / "hello"
    content.write_text("hi\n")
    with tarfile.open(tmp_path / "l.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        info = tar.gettarinfo(content, "hello")
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        with open(content, "rb") as f:
            tar.addfile(info, f)
    umoci_py("raw", "add-layer", "--compress", "none", "--history.created", "2025-01-02T03:04:06Z",
             "--image", f"{layout}:t", tmp_path / "l.tar")
    return layout


def test_stat_text_is_umoci_06s(image):
    entry = _entry(image, "t")
    manifest = manifest_of(image, "t")
    config, layer = manifest["config"], manifest["layers"][0]
    assert layer["size"] == 10240 and entry["size"] < 1000 and config["size"] < 1000
    expected = f"""\
== MANIFEST ==
Schema Version: 2
Media Type: {MANIFEST}
Config:
\tDescriptor:
\t\tMedia Type: {CONFIG}
\t\tDigest: {config["digest"]}
\t\tSize: {config["size"]}B
Layers:
\tDescriptor:
\t\tMedia Type: application/vnd.oci.image.layer.v1.tar
\t\tDigest: {layer["digest"]}
\t\tSize: 10.24kB
Annotations:
\tk: v
Descriptor:
\tMedia Type: {MANIFEST}
\tDigest: {entry["digest"]}
\tSize: {entry["size"]}B
\tAnnotations:
\t\torg.opencontainers.image.ref.name: t

== CONFIG ==
Created: 1970-01-01T00:16:40Z
Author: "Aleksa Sarai <cyphar@cyphar.com>"
Platform:
\tOS: linux
\tArchitecture: arm (v7)
Image Config:
\tUser: ""
\tCommand:
\t\t"/this is a file with spaces"
\t\t-v
\tWorking Directory: /w
\tEnvironment:
\t\tA=1
\tStop Signal: SIGUSR1
\tExposed Ports: 1234/tcp, 2000, 8080/tcp
\tVolumes: "/some nutty/path name/ here", /volume
\tLabels:
\t\tcom.example.empty: ""
\t\tcom.example.list: "a,b"
\t\t"tab\\tkey": "x\\ny"
Descriptor:
\tMedia Type: {CONFIG}
\tDigest: {config["digest"]}
\tSize: {config["size"]}B

== HISTORY ==
LAYER                                                                   CREATED                CREATED BY          SIZE    COMMENT
<none>                                                                  2025-01-02T03:04:05.5Z "sh -c \\"x, y\\""    <none>  a comment
{layer["digest"]} 2025-01-02T03:04:06Z   umoci raw add-layer 10.24kB 
"""
    assert umoci_py("stat", "--image", f"{image}:t").stdout == expected


def test_stat_empty_lists_entrypoint_escaped_and_descriptor_extras(image):
    """`(empty)` for an empty list or map, `(escaped)` names, and a descriptor's
    platform, URLs, annotations and data, as 0.6 prints them."""
    umoci_py("config", "--image", f"{image}:t", "--clear", "config.env", "--clear", "config.cmd",
             "--clear", "config.labels", "--config.entrypoint", "/bin/sh", "--config.user", "app",
             "--no-history")
    manifest = manifest_of(image, "t")
    config = json.loads(blob_path(image, manifest["config"]["digest"]).read_bytes())
    config["config"].update(Env=[], Labels={}, ArgsEscaped=True)
    data = json.dumps(config).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blob_path(image, digest).write_bytes(data)
    manifest["config"] = {"mediaType": CONFIG, "digest": digest, "size": len(data)}
    manifest["layers"][0].update(urls=["https://example.com/a"], annotations={"b": "2", "a": "1"},
                                 platform={"os": "linux", "architecture": "arm64"},
                                 data=base64.b64encode(b"hello, world\x00\x01").decode())
    mdata = json.dumps(manifest).encode()
    mdigest = "sha256:" + hashlib.sha256(mdata).hexdigest()
    blob_path(image, mdigest).write_bytes(mdata)
    (image / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": MANIFEST, "digest": mdigest, "size": len(mdata),
         "annotations": {"org.opencontainers.image.ref.name": "t"}}]}))
    text = umoci_py("stat", "--image", f"{image}:t").stdout
    layer = manifest["layers"][0]
    assert f"""\
Layers:
\tDescriptor:
\t\tMedia Type: application/vnd.oci.image.layer.v1.tar
\t\tDigest: {layer["digest"]}
\t\tSize: 10.24kB
\t\tPlatform:
\t\t\tOS: linux
\t\t\tArchitecture: arm64
\t\tURLs:
\t\t\thttps://example.com/a
\t\tAnnotations:
\t\t\ta: 1
\t\t\tb: 2
\t\tData: (14 bytes)
\t\t\t00000000  68 65 6c 6c 6f 2c 20 77  6f 72 6c 64 00 01        |hello, world..|
""" in text
    assert """\
Image Config:
\tUser: app
\tEntrypoint (escaped):
\t\t/bin/sh
\tCommand (escaped): (empty)
\tWorking Directory: /w
\tEnvironment: (empty)
\tStop Signal: SIGUSR1
\tExposed Ports: 1234/tcp, 2000, 8080/tcp
\tVolumes: "/some nutty/path name/ here", /volume
\tLabels: (empty)
Descriptor:
""" in text


def test_stat_json_shape(image):
    info = json.loads(umoci_py("stat", "--json", "--image", f"{image}:t").stdout)
    assert list(info) == ["manifest", "config", "history"]
    assert info["manifest"]["descriptor"] == _entry(image, "t")
    assert info["manifest"]["blob"] == manifest_of(image, "t")
    assert info["config"]["descriptor"] == manifest_of(image, "t")["config"]
    assert info["config"]["blob"]["author"] == "Aleksa Sarai <cyphar@cyphar.com>"
    layer = manifest_of(image, "t")["layers"][0]
    assert info["history"] == [
        {"layer": None, "diff_id": "", "created": "2025-01-02T03:04:05.5Z",
         "created_by": 'sh -c "x, y"', "comment": "a comment", "empty_layer": True},
        {"layer": layer, "diff_id": info["config"]["blob"]["rootfs"]["diff_ids"][0],
         "created": "2025-01-02T03:04:06Z", "created_by": "umoci raw add-layer"},
    ]


def test_stat_history_matches_umoci(busybox_layout):
    """The history table and JSON history of a umoci-made image, as umoci 0.4.7 prints them
    (its stat shows only the history; no value there needs quoting)."""
    ours = umoci_py("stat", "--image", f"{busybox_layout}:latest").stdout
    assert ours.split("== HISTORY ==\n")[1] == umoci("stat", "--image", f"{busybox_layout}:latest").stdout
    ours_json = json.loads(umoci_py("stat", "--json", "--image", f"{busybox_layout}:latest").stdout)
    theirs = json.loads(umoci("stat", "--json", "--image", f"{busybox_layout}:latest").stdout)
    assert ours_json["history"] == theirs["history"]


def test_stat_errors_are_umocis(image):
    proc = umoci_py("stat", "--image", f"{image}:nope", check=False)
    assert_one_line_error(proc, f"{image}: tag not found: nope")
