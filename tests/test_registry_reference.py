"""Image reference normalisation and where registry credentials are read from."""

from __future__ import annotations

import base64
import json

import pytest

from orca.registry import auth, reference
from orca.registry.errors import RegistryError


@pytest.mark.parametrize("text,want,host", [
    ("debian", "docker.io/library/debian:latest", "registry-1.docker.io"),
    ("debian:bookworm", "docker.io/library/debian:bookworm", "registry-1.docker.io"),
    ("docker://alpine", "docker.io/library/alpine:latest", "registry-1.docker.io"),
    ("index.docker.io/foo/bar:1", "docker.io/foo/bar:1", "registry-1.docker.io"),
    ("localhost/x", "localhost/x:latest", "localhost"),
    ("127.0.0.1:5000/a/b:t-1", "127.0.0.1:5000/a/b:t-1", "127.0.0.1:5000"),
    ("quay.io/org/img@sha256:" + "a" * 64, "quay.io/org/img@sha256:" + "a" * 64, "quay.io"),
    ("user/img:v2@sha256:" + "b" * 64, "docker.io/user/img:v2@sha256:" + "b" * 64, "registry-1.docker.io"),
])
def test_parse_normalises(text, want, host):
    ref = reference.parse(text)
    assert str(ref) == want
    assert ref.host == host
    assert ref.reference == (ref.digest or ref.tag)


@pytest.mark.parametrize("text,part", [
    ("Debian", "bad repository name"),
    ("a b", "spaces"),
    ("img@sha256:abc", "bad digest"),
    ("img:-bad", "bad tag"),
    ("", "empty"),
])
def test_parse_rejects(text, part):
    with pytest.raises(RegistryError, match=part):
        reference.parse(text)


def test_looks_remote_only_with_an_explicit_host():
    assert reference.looks_remote("localhost:5000/x")
    assert reference.looks_remote("registry.example/x")
    assert not reference.looks_remote("debian:bookworm")
    assert not reference.looks_remote("library/debian")


def _auth_file(path, entries):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": {k: {"auth": base64.b64encode(v.encode()).decode()}
                                          for k, v in entries.items()}}))
    return path


def test_credentials_follow_podman_order_then_docker(tmp_path):
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    _auth_file(tmp_path / ".docker" / "config.json", {"reg.test:5000": "dock:er", "https://index.docker.io/v1/": "hub:pw"})
    _auth_file(tmp_path / "run" / "containers" / "auth.json", {"reg.test:5000/team": "pod:man"})
    files = auth.auth_files(env)
    assert auth.find_credential("reg.test:5000", "team/app", files) == auth.Credential("pod", "man")
    assert auth.find_credential("reg.test:5000", "other/app", files) == auth.Credential("dock", "er")
    assert auth.find_credential("docker.io", "library/debian", files) == auth.Credential("hub", "pw")
    assert auth.find_credential("elsewhere.test", "x", files) is None
    env["REGISTRY_AUTH_FILE"] = str(_auth_file(tmp_path / "explicit.json", {"reg.test:5000": "expl:icit"}))
    assert auth.find_credential("reg.test:5000", "other/app", auth.auth_files(env)).username == "expl"


def test_credential_never_shows_its_password():
    cred = auth.Credential("alice", "hunter2-secret")
    assert "hunter2" not in repr(cred) and "hunter2" not in str(cred) and "hunter2" not in f"{cred!r} {cred}"


def test_bad_auth_entry_names_the_file(tmp_path):
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": {"reg.test": {"auth": "not base64!"}}}))
    with pytest.raises(RegistryError, match=f"{path}: entry 'reg.test'"):
        auth.find_credential("reg.test", "x", [path])


def test_parse_challenge():
    kind, params = auth.parse_challenge('Bearer realm="http://127.0.0.1:1/token",service="reg",'
                                        'scope="repository:a/b:pull,push"')
    assert kind == "bearer"
    assert params == {"realm": "http://127.0.0.1:1/token", "service": "reg", "scope": "repository:a/b:pull,push"}
