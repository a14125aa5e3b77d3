"""schemas.validate accepts what the OCI tools write and names file and field otherwise."""

import json
import os
import subprocess
import sys

import pytest

from umoci_py import schemas
from umoci_py.errors import SchemaError
from umoci_py_helpers import umoci_unpack

DIGEST = "sha256:" + "ab" * 32


def _index(**desc):
    entry = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": DIGEST, "size": 3}
    entry.update(desc)
    return {"schemaVersion": 2, "manifests": [entry]}


def _error(doc, kind, source="index.json"):
    with pytest.raises(SchemaError) as err:
        schemas.validate(doc, kind, source)
    return str(err.value)


def test_fixture_documents_validate(debian_layout_ro):
    index = json.loads((debian_layout_ro / "index.json").read_text())
    schemas.validate(index, "index", "index.json")
    schemas.validate(json.loads((debian_layout_ro / "oci-layout").read_text()), "oci-layout", "oci-layout")
    manifest_path = debian_layout_ro / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads(manifest_path.read_text())
    schemas.validate(manifest, "manifest", str(manifest_path))
    config = json.loads((debian_layout_ro / "blobs" / "sha256" /
                         manifest["config"]["digest"].split(":")[1]).read_text())
    schemas.validate(config, "config", "config")
    schemas.validate(manifest["layers"][0], "descriptor", "layer")


def test_bad_digest_names_file_and_field():
    msg = _error(_index(digest="sha256:zz"), "index")
    assert msg.startswith("index.json: manifests[0].digest: 'sha256:zz' does not match")


def test_negative_size_refused():
    assert _error(_index(size=-1), "index") == "index.json: manifests[0].size: -1 is less than the minimum of 0"


def test_annotation_key_with_dots_is_quoted():
    msg = _error(_index(annotations={"org.example": 5}), "index")
    assert msg == "index.json: manifests[0].annotations[\"org.example\"]: 5 is not of type 'string'"


def test_missing_field_and_forbidden_field():
    assert _error({"schemaVersion": 2}, "index") == "index.json: 'manifests' is a required property"
    doc = {"schemaVersion": 2, "manifests": [], "layers": []}
    assert _error(doc, "index") == "index.json: layers: field not allowed in index"
    manifest = {"schemaVersion": 2, "config": _index()["manifests"][0], "layers": [], "manifests": []}
    assert _error(manifest, "manifest", "m") == "m: manifests: field not allowed in manifest"


def test_docker_media_types_are_read():
    schemas.validate({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
                      "manifests": []}, "index", "i")
    desc = {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": DIGEST, "size": 1}
    schemas.validate({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                      "config": desc, "layers": []}, "manifest", "m")
    msg = _error({"schemaVersion": 2, "mediaType": "text/plain", "config": desc, "layers": []}, "manifest", "m")
    assert msg.startswith("m: mediaType: 'text/plain' is not one of")


def test_config_rootfs_type_checked():
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "tarball", "diff_ids": []}}
    assert _error(config, "config", "c") == "c: rootfs.type: 'layers' was expected"


def test_umoci_runtime_config_and_umoci_json_validate(busybox_layout, tmp_path):
    bundle = tmp_path / "bundle"
    umoci_unpack(busybox_layout, "latest", bundle)
    spec = json.loads((bundle / "config.json").read_text())
    schemas.validate(spec, "runtime-config", "config.json")
    meta = json.loads((bundle / "umoci.json").read_text())
    schemas.validate(meta, "umoci-json", "umoci.json")
    assert meta["map_options"]["uid_mappings"][0]["hostID"] == os.geteuid()
    meta["umoci_version"] = "3"
    assert _error(meta, "umoci-json", "umoci.json") == "umoci.json: umoci_version: '2' was expected"
    del spec["process"]["cwd"]
    assert _error(spec, "runtime-config", "config.json") == "config.json: process: 'cwd' is a required property"


def _variants(doc):
    """doc itself, then copies with one field replaced, removed or added, at every depth."""
    yield doc
    odd = [None, True, False, 0, 1, 2.0, 2.5, -1, 2 ** 65, "", "x", "sha256:" + "0" * 64, [], [1], {}, {"a": "b"}]
    if isinstance(doc, dict):
        for key, value in doc.items():
            for sub in list(_variants(value))[1:] + odd:
                yield {**doc, key: sub}
            yield {k: v for k, v in doc.items() if k != key}
        for extra in ("manifests", "layers", "config", "whatever"):
            yield {**doc, extra: []}
    elif isinstance(doc, list):
        for i, value in enumerate(doc[:2]):
            for sub in list(_variants(value))[1:] + odd:
                yield doc[:i] + [sub] + doc[i + 1:]
        yield []
    else:
        yield from odd


def _documents(layout):
    index = json.loads((layout / "index.json").read_text())
    blob = lambda d: json.loads((layout / "blobs" / "sha256" / d["digest"].split(":")[1]).read_text())
    manifest = blob(index["manifests"][0])
    config = blob(manifest["config"])
    config["history"] = config.get("history") or [{"created": "2024-01-02T03:04:05Z", "empty_layer": True}]
    return {"index": index, "manifest": manifest, "config": config, "descriptor": manifest["layers"][0],
            "oci-layout": json.loads((layout / "oci-layout").read_text())}


def test_fast_check_agrees_with_jsonschema(debian_layout_ro, busybox_layout, tmp_path):
    # The compiled predicate decides alone for valid documents, so it must
    # refuse exactly what jsonschema refuses.
    import jsonschema

    docs = _documents(debian_layout_ro)
    bundle = tmp_path / "bundle"
    umoci_unpack(busybox_layout, "latest", bundle)
    docs["runtime-config"] = json.loads((bundle / "config.json").read_text())
    docs["umoci-json"] = json.loads((bundle / "umoci.json").read_text())
    assert set(docs) == set(schemas.KINDS)
    counts = {True: 0, False: 0}
    for kind, doc in docs.items():
        check = schemas._check(kind)
        assert check is not None, kind
        for variant in _variants(doc):
            expected = jsonschema.exceptions.best_match(schemas._validator(kind).iter_errors(variant)) is None
            assert check(variant) == expected, (kind, variant)
            counts[expected] += 1
    assert counts[True] > 100 and counts[False] > 100


def test_valid_documents_do_not_load_jsonschema(debian_layout_ro):
    code = ("import sys; from umoci_py.cas import Layout; from umoci_py import refs;"
            f"l = Layout.open({str(debian_layout_ro)!r}); p = refs.resolve(l, 'bookworm');"
            "m = l.read_json(p[-1], 'manifest'); l.read_json(m['config'], 'config');"
            "print('jsonschema' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out == "False\n"
