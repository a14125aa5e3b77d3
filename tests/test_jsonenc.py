"""jsonenc.dumps must give the bytes Go's encoding/json (and so umoci) writes."""

import hashlib
import json
import subprocess

from umoci_py import jsonenc
from umoci_py.cas import Layout

REFERENCE_CONFIG = {"created": "2025-09-05T13:05:10.12345+10:00", "architecture": "amd64", "os": "linux",
                    "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}


def test_reference_config_bytes_and_digest():
    data = jsonenc.dumps(REFERENCE_CONFIG)
    assert data == (b'{"created":"2025-09-05T13:05:10.12345+10:00","architecture":"amd64","os":"linux",'
                    b'"config":{},"rootfs":{"type":"layers","diff_ids":[]}}\n')
    assert len(data) == 135
    assert hashlib.sha256(data).hexdigest().startswith("e5101a46")


def test_reference_manifest_digest():
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": "sha256:" + hashlib.sha256(jsonenc.dumps(REFERENCE_CONFIG)).hexdigest(),
                           "size": 135},
                "layers": []}
    data = jsonenc.dumps(manifest)
    assert len(data) == 249
    assert hashlib.sha256(data).hexdigest().startswith("98a4b5d5")


def test_string_escapes_follow_go():
    assert jsonenc.dumps("<a&b>") == b'"\\u003ca\\u0026b\\u003e"\n'
    assert jsonenc.dumps("\u2028\u2029") == b'"\\u2028\\u2029"\n'
    assert jsonenc.dumps("caf\u00e9 \u65e5") == '"caf\u00e9 \u65e5"\n'.encode()
    assert jsonenc.dumps('q"b\\') == b'"q\\"b\\\\"\n'
    assert jsonenc.dumps("\n\r\t\x01\x1f\x7f") == b'"\\n\\r\\t\\u0001\\u001f\x7f"\n'
    assert jsonenc.dumps("\ud800") == '"\ufffd"\n'.encode()


def test_scalars_numbers_and_order():
    doc = {"z": None, "a": [True, False, 1, -7, 2**63 - 1], "m": {"b": 1, "a": 2}}
    assert jsonenc.dumps(doc) == b'{"z":null,"a":[true,false,1,-7,9223372036854775807],"m":{"b":1,"a":2}}\n'
    floats = [1.0, 0.5, 123456789.0, 1e20, 1e21, 1e-6, 1e-7, 1.5e-7, -2.25]
    assert jsonenc.dumps(floats) == b"[1,0.5,123456789,100000000000000000000,1e+21,0.000001,1e-7,1.5e-7,-2.25]\n"


def test_reencoding_umoci_blobs_is_byte_identical(busybox_layout, tmp_path):
    """umoci writes labels with HTML characters and non-ASCII: we reproduce its bytes."""
    subprocess.run(["umoci", "config", "--image", f"{busybox_layout}:latest",
                    "--config.label", "html=<a href='x'>&amp;</a>",
                    "--config.label", "utf8=caf\u00e9 \u2028 end",
                    "--config.env", "X=\t\"q\"", "--author", "me <me@example.org>"], check=True)
    layout = Layout.open(busybox_layout)
    index_bytes = (busybox_layout / "index.json").read_bytes()
    assert jsonenc.dumps(json.loads(index_bytes)) == index_bytes
    blobs = 0
    for path in (busybox_layout / "blobs" / "sha256").iterdir():
        data = path.read_bytes()
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, ValueError):
            continue
        assert jsonenc.dumps(doc) == data, path
        blobs += 1
    assert blobs >= 4  # old and new config and manifest
    assert layout.read_index()["manifests"]
