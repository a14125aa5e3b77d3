"""orca-build on untrusted or racing inputs: deeply nested JSON from a registry or
in a cache record, a layout another build creates meanwhile, a decompression
bomb among the layers a step extracts."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orca.cache import CacheStore
from orca.errors import BuildError
from orca.copyrootfs import Snapshot
from orca.snapstore import SnapshotStore
from umoci_py import mediatypes, refs
from umoci_py.cas import Layout
from umoci_py.errors import LayerError, LayoutError
from umoci_py.unpack import InflateLimit

from orca_build_helpers import run_cli

NESTED = b"[" * 100_000 + b"]" * 100_000
KEY = "sha256:" + "ab" * 32


def test_deeply_nested_cache_record_is_a_one_line_build_error(tmp_path):
    store = CacheStore(tmp_path / "cache")
    record = store.records / KEY.split(":")[1]
    for content, reason in ((NESTED, "nested too deeply"), (b"{", "Expecting property name"),
                            (b"[]", "not a JSON object"), (b'{"image": 1}', "TypeError")):
        record.write_bytes(content)
        with pytest.raises(BuildError) as err:
            store.get(KEY)
        assert str(err.value).startswith(f"{record}: corrupt cache record: {reason}")
        assert "\n" not in str(err.value)
        assert store.list() == []     # listing skips what it cannot read


def test_corrupt_snapshot_records_are_skipped_or_one_line_errors(tmp_path):
    store = SnapshotStore(tmp_path / "cache")
    snap = store.root / KEY.split(":")[1]
    snap.mkdir()
    shapes = {"changes.json": (b'{"entries": {"a": 1}, "removed": []}', "not entries and removed paths"),
              "manifest.json": (b'{"a": 1}', "not an object of keywords")}
    for name in ("changes.json", "manifest.json"):  # manifest.json: a snapshot made before changes.json
        for content, reason in ((NESTED, "nested too deeply"), (b"{", "Expecting property name"),
                                (b"[]", "not a JSON object"), shapes[name]):
            (snap / "meta.json").write_bytes(content if content != shapes[name][0] else b"[]")
            (snap / name).write_bytes(content)
            assert store.list() == []     # gc leaves alone what it cannot read
            with pytest.raises(BuildError) as err:
                SnapshotStore(tmp_path / "cache").manifest(snap.name)
            assert str(err.value).startswith(f"{snap / name}: corrupt snapshot manifest: ")
            assert reason in str(err.value) and "\n" not in str(err.value)
        (snap / name).unlink()


class _HostileRegistry(BaseHTTPRequestHandler):
    """/v2/deep: a manifest nested past the parser's limit; /v2/err: an error body like it."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        status, body = 200, b"{}"
        if self.path.startswith("/v2/deep/manifests/"):
            body = NESTED
        elif self.path.startswith("/v2/err/manifests/"):
            status, body = 500, b'{"errors": ' + NESTED + b"}"
        self.send_response(status)
        self.send_header("Content-Type", mediatypes.MANIFEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def hostile_registry():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


@pytest.mark.parametrize("repo, fragment", [("deep", "not JSON: nested too deeply"), ("err", "500")])
def test_nested_json_from_a_registry_is_a_one_line_error(tmp_path, hostile_registry, repo, fragment):
    proc = subprocess.run([sys.executable, "-c", "from orca.cli import main; main()", "pull",
                           "--layout", str(tmp_path / "layout"), "--insecure-registry", hostile_registry,
                           f"{hostile_registry}/{repo}:latest"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("orca-build: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert fragment in proc.stderr


def test_export_into_a_layout_another_build_just_created(tmp_path, monkeypatch):
    """The first open finds nothing, then the other build's init lands before ours."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY f /f\n")
    (ctx / "f").write_text("x\n")
    out = tmp_path / "out"
    real_open = Layout.open
    raced = []

    def racing_open(path):
        if path == out and not raced:
            raced.append(path)
            Layout.init(path)
            raise LayoutError(f"{path}: not a layout yet")
        return real_open(path)

    monkeypatch.setattr(Layout, "open", staticmethod(racing_open))
    result = run_cli("build", "--layout", str(out), "--cache-dir", str(tmp_path / "cache"),
                     "-t", "raced", "--progress", "plain", str(ctx))
    assert result.exit_code == 0, result.output
    assert raced and refs.list_tags(real_open(out)) == ["raced"]


def _gzip_layer(store: Layout, size: int) -> dict:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("zeros")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    digest, blob_size = store.put_blob(gzip.compress(raw.getvalue()))
    return {"mediaType": mediatypes.LAYER_GZIP, "digest": digest, "size": blob_size}


def test_snapshot_refuses_a_layer_inflating_past_the_bound(tmp_path):
    store = Layout.init(tmp_path / "store")
    layer = _gzip_layer(store, 1 << 20)       # 1 MiB of zeros, ~1 KiB compressed
    with pytest.raises(LayerError) as err:
        Snapshot(tmp_path / "bomb", store, InflateLimit(ratio=100, floor=64 << 10)).materialize([layer])
    # no umoci-py flag to name: orca-build has none
    bound = max(64 << 10, 100 * layer["size"])
    assert str(err.value) == (f"{store.path}: layer {layer['digest']}: inflates to more than {bound} bytes:"
                              " refused as a decompression bomb")
    rootfs = Snapshot(tmp_path / "ok", store).materialize([layer])   # the default floor is 1 GiB
    assert (rootfs / "zeros").stat().st_size == 1 << 20
