"""Pull and push against a real docker-registry over TLS (test CA) with htpasswd auth."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fixtures_dir import FIXTURES
from registry_server import Registry, free_port, make_ca, skopeo
from umoci_py import mediatypes as mt
from umoci_py import refs
from umoci_py.cas import Layout

from orca.registry import reference
from orca.registry.client import Client, RegistryOptions
from orca.registry.errors import DigestError, RegistryError
from orca.registry.pull import pull
from orca.registry.push import push

USER, PASSWORD = "alice", "s3cret-Pa55"
AMD64 = refs.host_platform()


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return make_ca(tmp_path_factory.mktemp("ca"))


def _seed(reg: Registry, tls: dict, src: str, dest: str, *extra: str) -> None:
    skopeo("copy", "-q", *extra, "--dest-cert-dir", str(tls["certdir"]), "--dest-creds", f"{USER}:{PASSWORD}",
           src, f"docker://{reg.host}/{dest}")


def _auth_json(path: Path, host: str, password: str = PASSWORD) -> Path:
    path.write_text(json.dumps({"auths": {host: {"auth": base64.b64encode(f"{USER}:{password}".encode()).decode()}}}))
    return path


@pytest.fixture(scope="module")
def reg(tmp_path_factory, tls):
    """One TLS + htpasswd registry for the module, seeded with busybox and a two-platform index."""
    d = tmp_path_factory.mktemp("registry")
    r = Registry(d / "reg", tls=tls, htpasswd={USER: PASSWORD})
    try:
        _seed(r, tls, f"oci:{FIXTURES / 'busybox'}:latest", "lib/busybox:1")
        _seed(r, tls, f"oci:{_two_platform_layout(d / 'multi')}:multi", "lib/multi:1", "--all")
        yield r
    finally:
        r.stop()


def _two_platform_layout(path: Path) -> Path:
    """busybox as linux/amd64 plus a linux/arm64 variant of its config, under one index."""
    shutil.copytree(FIXTURES / "busybox", path)
    layout = Layout.open(path)
    mdesc = refs.resolve(layout, "latest")[-1]
    manifest = layout.read_json(mdesc, "manifest")
    config = layout.read_json(manifest["config"], "config")
    config["architecture"] = "arm64"
    cdigest, csize = layout.put_json(config, "config")
    arm = dict(manifest, config=dict(manifest["config"], digest=cdigest, size=csize))
    adigest, asize = layout.put_json(arm, "manifest")
    index = {"schemaVersion": 2, "mediaType": mt.INDEX, "manifests": [
        dict(mdesc, platform={"os": "linux", "architecture": AMD64.architecture}),
        {"mediaType": mt.MANIFEST, "digest": adigest, "size": asize,
         "platform": {"os": "linux", "architecture": "arm64"}}]}
    idigest, isize = layout.put_json(index, "index")
    refs.set_tag(layout, "multi", {"mediaType": mt.INDEX, "digest": idigest, "size": isize})
    return path


@pytest.fixture
def client(tmp_path, reg, tls):
    return Client(RegistryOptions(tls_ca=(tls["ca"],), auth_files=[_auth_json(tmp_path / "auth.json", reg.host)],
                                  retries=2, backoff=0.05))


def _inspect_digest(reg: Registry, tls: dict, repo: str) -> str:
    out = skopeo("inspect", "--raw", "--cert-dir", str(tls["certdir"]), "--creds", f"{USER}:{PASSWORD}",
                 f"docker://{reg.host}/{repo}")
    import hashlib
    return "sha256:" + hashlib.sha256(out.encode()).hexdigest()


def _orca(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-c", "from orca.cli import main; main()", *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd)


def _intact(path: Path) -> None:
    """No temp files left and every blob matches its name."""
    layout = Layout.open(path)
    assert [p.name for p in path.iterdir()
            if p.name not in ("blobs", "index.json", "oci-layout") and not p.name.endswith(".lock")] == []
    for digest in layout.list_blobs():
        layout.read_blob(digest, layout.blob_path(digest).stat().st_size)


def test_pull_cli_matches_registry_digest_and_refetches_nothing(tmp_path, reg, tls):
    env = {"REGISTRY_AUTH_FILE": str(_auth_json(tmp_path / "auth.json", reg.host))}
    out = tmp_path / "layout"
    first = _orca("pull", "--tls-ca", str(tls["ca"]), "--layout", str(out), f"{reg.host}/lib/busybox:1", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == _inspect_digest(reg, tls, "lib/busybox:1")
    layout = Layout.open(out)
    assert refs.list_tags(layout) == ["1"]
    manifest = layout.read_json(refs.resolve(layout, "1")[-1], "manifest")
    assert layout.has_blob(manifest["config"]["digest"]) and all(layout.has_blob(d["digest"]) for d in manifest["layers"])
    _intact(out)


def test_second_pull_fetches_no_blob(tmp_path, client, reg):
    layout = Layout.init(tmp_path / "l")
    ref = reference.parse(f"{reg.host}/lib/busybox:1")
    first = pull(client, ref, layout, AMD64)
    assert len(first.fetched) == 1 + len(first.manifest["layers"])
    assert pull(client, ref, layout, AMD64).fetched == []


def test_two_platform_index_selects_the_platform(tmp_path, client, reg):
    layout = Layout.init(tmp_path / "l")
    ref = reference.parse(f"{reg.host}/lib/multi:1")
    amd = pull(client, ref, layout, AMD64, tag="amd")
    arm = pull(client, ref, layout, refs.Platform("linux", "arm64"), tag="arm")
    assert amd.config["architecture"] == AMD64.architecture and arm.config["architecture"] == "arm64"
    assert amd.descriptor["digest"] != arm.descriptor["digest"]
    assert arm.fetched == [arm.manifest["config"]["digest"]]  # the layer is shared: not fetched twice
    with pytest.raises(RegistryError, match=r"no image for platform linux/s390x .*linux/arm64"):
        pull(client, ref, layout, refs.Platform("linux", "s390x"))


def test_build_from_registry_then_push_round_trips_through_skopeo(tmp_path, reg, tls):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("hello registry\n")
    (ctx / "Dockerfile").write_text(f"FROM {reg.host}/lib/busybox:1\nCOPY hello.txt /hello.txt\n")
    env = {"REGISTRY_AUTH_FILE": str(_auth_json(tmp_path / "auth.json", reg.host))}
    res = _orca("build", "--layout", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                "--tls-ca", str(tls["ca"]), "--progress", "plain",
                "-o", f"type=registry,name={reg.host}/app/hello:v1", "-t", "v1", "--load", str(ctx), env=env)
    assert res.returncode == 0, res.stderr
    digest = res.stdout.strip()
    assert _inspect_digest(reg, tls, "app/hello:v1") == digest
    back = tmp_path / "back"
    skopeo("copy", "-q", "--src-cert-dir", str(tls["certdir"]), "--src-creds", f"{USER}:{PASSWORD}",
           f"docker://{reg.host}/app/hello:v1", f"oci:{back}:v1")
    layout = Layout.open(back)
    assert refs.resolve(layout, "v1")[-1]["digest"] == digest


def test_push_skips_existing_mounts_across_repos_and_chunks(tmp_path, client, reg, tls):
    layout = Layout.init(tmp_path / "l")
    src = pull(client, reference.parse(f"{reg.host}/lib/busybox:1"), layout, AMD64, tag="bb")
    client.opts.chunk_size = 64 << 10  # the busybox layer goes up in several PATCH chunks
    blobs = sorted([src.manifest["config"]["digest"]] + [d["digest"] for d in src.manifest["layers"]])
    fresh = push(client, layout, src.descriptor, reference.parse(f"{reg.host}/chunked/bb:1"))
    assert sorted(fresh.uploaded) == blobs
    assert _inspect_digest(reg, tls, "chunked/bb:1") == src.descriptor["digest"]
    again = push(client, layout, src.descriptor, reference.parse(f"{reg.host}/chunked/bb:2"))
    assert sorted(again.skipped) == blobs and again.uploaded == []
    mounted = push(client, layout, src.descriptor, reference.parse(f"{reg.host}/mounted/bb:1"),
                   mount_from=("lib/busybox",))
    assert sorted(mounted.mounted) == blobs and mounted.uploaded == []
    assert _inspect_digest(reg, tls, "mounted/bb:1") == src.descriptor["digest"]


def test_wrong_password_one_line_naming_the_registry_no_secret(tmp_path, reg, tls):
    env = {"REGISTRY_AUTH_FILE": str(_auth_json(tmp_path / "auth.json", reg.host, "wrong-Secret-42"))}
    res = _orca("pull", "--tls-ca", str(tls["ca"]), "--layout", str(tmp_path / "out"),
                f"{reg.host}/lib/busybox:1", env=env)
    assert res.returncode == 1
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and reg.host in lines[0] and "401" in lines[0]
    assert "wrong-Secret-42" not in res.stderr
    assert base64.b64encode(f"{USER}:wrong-Secret-42".encode()).decode() not in res.stderr
    assert not (tmp_path / "out" / "index.json").exists() or refs.list_tags(Layout.open(tmp_path / "out")) == []


def test_untrusted_certificate_is_a_clear_error(tmp_path, reg):
    res = _orca("pull", "--layout", str(tmp_path / "out"), f"{reg.host}/lib/busybox:1",
                env={"REGISTRY_AUTH_FILE": str(_auth_json(tmp_path / "auth.json", reg.host))})
    assert res.returncode == 1
    assert reg.host in res.stderr and "--tls-ca" in res.stderr and len(res.stderr.splitlines()) == 1


def test_missing_image_names_the_reference(tmp_path, client, reg):
    with pytest.raises(RegistryError, match=rf"manifest {reg.host}/lib/nothing:1: not found on {reg.host} \(404\)"):
        pull(client, reference.parse(f"{reg.host}/lib/nothing:1"), Layout.init(tmp_path / "l"), AMD64)


# -- destructive tests: a registry of their own --------------------------------

@pytest.fixture
def own_reg(tmp_path, tls):
    r = Registry(tmp_path / "own", tls=tls, htpasswd={USER: PASSWORD})
    try:
        _seed(r, tls, f"oci:{FIXTURES / 'debian'}:bookworm", "lib/debian:bookworm")
        yield r
    finally:
        r.stop()


def _layer_of(client, r: Registry, repo: str) -> dict:
    body, _, _ = client.repository(reference.parse(f"{r.host}/{repo}")).get_manifest()
    return json.loads(body)["layers"][0]


def test_blob_with_wrong_content_is_refused(tmp_path, tls, own_reg):
    client = Client(RegistryOptions(tls_ca=(tls["ca"],), auth_files=[_auth_json(tmp_path / "a.json", own_reg.host)]))
    layer = _layer_of(client, own_reg, "lib/debian:bookworm")
    data = own_reg.blob_data(layer["digest"])
    with open(data, "r+b") as f:  # same size, one byte different
        f.seek(layer["size"] // 2)
        byte = f.read(1)
        f.seek(layer["size"] // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    out = tmp_path / "out"
    layout = Layout.init(out)
    with pytest.raises(DigestError, match=rf"blob {layer['digest']} .*digest mismatch"):
        pull(client, reference.parse(f"{own_reg.host}/lib/debian:bookworm"), layout, AMD64, tag="x")
    assert not layout.has_blob(layer["digest"]) and refs.list_tags(layout) == []
    _intact(out)


class KillingProxy:
    """TCP relay to the registry that SIGKILLs it once `limit` bytes went to the client."""

    def __init__(self, target_port: int, limit: int, kill):
        self.target, self.limit, self.kill = target_port, limit, kill
        self.sent = 0
        self.armed = True
        self.lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", free_port()))
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            for a, b, count in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pump, args=(a, b, count), daemon=True).start()

    def _pump(self, src, dst, count):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if count:
                    with self.lock:
                        self.sent += len(data)
                        fire = self.armed and self.sent > self.limit
                        if fire:
                            self.armed = False
                    if fire:
                        self.kill()
                        break
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self):
        self.sock.close()


def test_registry_killed_mid_pull_then_rerun_succeeds(tmp_path, tls, own_reg):
    proxy = KillingProxy(own_reg.port, 4 << 20, own_reg.kill)
    try:
        client = Client(RegistryOptions(tls_ca=(tls["ca"],), retries=2, backoff=0.05,
                                        auth_files=[_auth_json(tmp_path / "a.json", proxy.host)]))
        ref = reference.parse(f"{proxy.host}/lib/debian:bookworm")
        out = tmp_path / "out"
        layout = Layout.init(out)
        with pytest.raises(RegistryError, match=rf"blob sha256:\w+ of {proxy.host}/lib/debian:bookworm: "
                                                rf"{proxy.host}: (download interrupted|connection failed)"):
            pull(client, ref, layout, AMD64, tag="bookworm")
        assert own_reg.proc.poll() is not None  # it really died
        assert refs.list_tags(layout) == []
        _intact(out)
        own_reg.start()
        pulled = pull(client, ref, layout, AMD64, tag="bookworm")
        assert refs.resolve(layout, "bookworm")[-1]["digest"] == pulled.descriptor["digest"]
        _intact(out)
    finally:
        proxy.close()
