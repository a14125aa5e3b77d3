"""The registry build cache behind a bearer-token registry, and token auth itself.

Two builders are two separate homes (auth file, cache directory and output
layout, all empty at the start) in this one test process: the suite runs as
a single unprivileged uid, so the second "user" shares the uid but nothing
on disk with the first.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from pathlib import Path

import pytest

from registry_server import Registry, TokenServer, skopeo
from umoci_py import refs
from umoci_py.cas import Layout

from orca.execute import BuildRequest, run_build
from orca.progress import Progress
from orca.registry import reference
from orca.registry.cache_export import RegistryCacheStore, export_records, load_records, parse_cache_ref
from orca.registry.client import Client, RegistryOptions
from orca.registry.errors import AuthError
from orca.registry.pull import pull

FIXTURES = Path("/var/cache/orca-fixtures")
USERS = {"builder-a": "pw-a-7781", "builder-b": "pw-b-9902"}
DOCKERFILE = """\
FROM {host}/lib/busybox:1
COPY one.txt /one.txt
WORKDIR /work/dir
COPY three.txt /three.txt
"""


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    d = tmp_path_factory.mktemp("token-registry")
    token = TokenServer(d / "token", USERS)
    r = Registry(d / "reg", token=token)
    try:
        skopeo("copy", "-q", "--dest-tls-verify=false", "--dest-creds", "builder-a:pw-a-7781",
               f"oci:{FIXTURES / 'busybox'}:latest", f"docker://{r.host}/lib/busybox:1")
        yield r
    finally:
        r.stop()
        token.stop()


def _home(tmp_path: Path, user: str, host: str, password: str | None = None) -> dict:
    home = tmp_path / user
    home.mkdir()
    auth = home / "auth.json"
    secret = f"{user}:{password or USERS[user]}"
    auth.write_text(json.dumps({"auths": {host: {"auth": base64.b64encode(secret.encode()).decode()}}}))
    client = Client(RegistryOptions(insecure=frozenset({host}), auth_files=[auth], retries=2, backoff=0.05))
    return {"home": home, "client": client}


def _build(h: dict, ctx: Path, cache_from: list[str], cache_to: str | None):
    client = h["client"]
    store = RegistryCacheStore(h["home"] / "cache", client, [parse_cache_ref(r) for r in cache_from],
                               parse_cache_ref(cache_to) if cache_to else None)
    out = io.StringIO()
    req = BuildRequest(context=ctx, layout=h["home"] / "out", cache_dir=h["home"] / "cache",
                       progress=Progress("plain", out), tags=["app"], jobs=1,
                       build_args={"SOURCE_DATE_EPOCH": "1700000000"}, registry=client, cache=store)
    result = run_build(req)
    store.export()
    return result, out.getvalue(), store


@pytest.fixture
def ctx(tmp_path, reg):
    c = tmp_path / "ctx"
    c.mkdir()
    (c / "Dockerfile").write_text(DOCKERFILE.format(host=reg.host))
    (c / "one.txt").write_text("one\n")
    (c / "three.txt").write_text("three\n")
    return c


def test_second_builder_is_all_cached_and_downloads_only_final_layers(tmp_path, reg, ctx):
    cache = f"registry:{reg.host}/cache/app:buildcache"
    a = _home(tmp_path, "builder-a", reg.host)
    _, log_a, _ = _build(a, ctx, [cache], cache)
    assert "CACHED" not in log_a
    b = _home(tmp_path, "builder-b", reg.host)
    second, log_b, _ = _build(b, ctx, [cache], cache)
    assert log_b.count("CACHED") == 3  # COPY, WORKDIR, COPY
    # the same image as the first builder's own fully cached rebuild (a cache hit
    # stores config keys in record order, so compare hit with hit)
    again, log_again, _ = _build(a, ctx, [], None)
    assert log_again.count("CACHED") == 3
    assert second.descriptor["digest"] == again.descriptor["digest"]

    out = Layout.open(b["home"] / "out")
    manifest = out.read_json(second.descriptor, "manifest")
    base = json.loads(b["client"].repository(reference.parse(f"{reg.host}/lib/busybox:1")).get_manifest()[0])
    base_blobs = {base["config"]["digest"]} | {d["digest"] for d in base["layers"]}
    step_layers = [d["digest"] for d in manifest["layers"] if d["digest"] not in base_blobs]
    assert len(step_layers) == 3
    fetched = b["client"].fetched
    assert len(fetched) == len(set(fetched))  # nothing twice
    assert set(fetched) == base_blobs | set(step_layers)  # the base for FROM, then only the final layers


def test_cache_records_hold_no_credentials(tmp_path, reg, ctx):
    cache = f"registry:{reg.host}/cache/secretless:c"
    a = _home(tmp_path, "builder-a", reg.host)
    _build(a, ctx, [], cache)
    records = load_records(a["client"], parse_cache_ref(cache))
    text = json.dumps(records)
    assert records and "pw-a-7781" not in text and base64.b64encode(b"builder-a:pw-a-7781").decode() not in text


def test_concurrent_writers_leave_the_ref_valid(tmp_path, reg, ctx):
    a = _home(tmp_path, "builder-a", reg.host)
    _, _, store = _build(a, ctx, [], None)
    records = {r["key"]: r for r in store.list()}
    keys = sorted(records)
    halves = [{k: records[k] for k in keys[:2]}, {k: records[k] for k in keys[2:]}]
    ref = reference.parse(f"{reg.host}/cache/race:c")
    errors = []

    def writer(part):
        try:
            client = _home(tmp_path / f"w{id(part)}", "builder-b", reg.host)["client"]
            for _ in range(3):
                export_records(client, store, ref, part)
        except Exception as err:  # reported below, with the thread's own error
            errors.append(err)

    for p in halves:
        (tmp_path / f"w{id(p)}").mkdir()
    threads = [threading.Thread(target=writer, args=(p,)) for p in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    repo = a["client"].repository(ref)
    manifest = json.loads(repo.get_manifest()[0])
    final = load_records(a["client"], ref)
    assert set(final) and set(final) <= set(keys)
    assert any(set(h) <= set(final) for h in halves)  # at least one writer's records whole
    layer_digests = {d["digest"] for d in manifest["layers"]}
    for record in final.values():
        assert {d["digest"] for d in record["image"]["layers"]} <= layer_digests
    assert all(repo.has_blob(d) for d in layer_digests)


def test_bearer_token_flow_and_wrong_password(tmp_path, reg):
    good = _home(tmp_path, "builder-a", reg.host)
    layout = Layout.init(tmp_path / "l")
    pulled = pull(good["client"], reference.parse(f"{reg.host}/lib/busybox:1"), layout, refs.host_platform())
    assert pulled.fetched
    bad = _home(tmp_path, "builder-b", reg.host, password="not-the-Pw-31337")
    with pytest.raises(AuthError) as info:
        pull(bad["client"], reference.parse(f"{reg.host}/lib/busybox:1"), Layout.init(tmp_path / "m"),
             refs.host_platform())
    message = str(info.value)
    assert reg.host in message and "token server" in message and "\n" not in message
    assert "not-the-Pw-31337" not in message


def test_missing_cache_ref_means_no_cache(tmp_path, reg, ctx):
    a = _home(tmp_path, "builder-a", reg.host)
    _, log, _ = _build(a, ctx, [f"registry:{reg.host}/cache/none:absent"], None)
    assert "CACHED" not in log
