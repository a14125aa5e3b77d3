"""The registry build cache behind a bearer-token registry, and token auth itself.

The two-builder test runs the second build as a real second unprivileged
user ($ORCA_USER2, reached with `sudo -n -u`, no subuid either) with its own
HOME and so its own credentials, empty default layout and cache; what it
downloads is read from the registry's access log.  The other tests use
separate directories (auth file, cache, layout) in this process.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import tarfile
import threading
from pathlib import Path

import pytest

from fixtures_dir import FIXTURES
from registry_server import Registry, TokenServer, skopeo
from second_user import as_user2, orca_build_as_user2, shared_context
from umoci_py import refs
from umoci_py.cas import Layout
from umoci_py.mutate import Mutator

from orca.execute import BuildRequest, run_build
from orca.progress import Progress
from orca.registry import reference
from orca.cache_export import ImportingCacheStore, parse_cache_spec
from orca.registry.cache_export import export_records, load_records
from orca.registry.client import Client, RegistryOptions
from orca.registry.errors import AuthError
from orca.registry.pull import pull

USERS = {"builder-a": "pw-a-7781", "builder-b": "pw-b-9902"}
SDE = "1700000000"
# A builder stage (on a base of its own) whose layers the final image does not
# contain, RUN steps in both stages, and COPY --from between them.
DOCKERFILE = """\
FROM {host}/lib/tools:1 AS builder
RUN mkdir /out && echo artifact > /out/artifact && echo scratch > /big-intermediate
COPY one.txt /one.txt

FROM {host}/lib/busybox:1
COPY three.txt /three.txt
WORKDIR /work/dir
RUN echo final > final.txt
COPY --from=builder /out/artifact /artifact
"""
STEPS = 6


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    d = tmp_path_factory.mktemp("token-registry")
    token = TokenServer(d / "token", USERS)
    r = Registry(d / "reg", token=token)
    try:
        skopeo("copy", "-q", "--dest-tls-verify=false", "--dest-creds", "builder-a:pw-a-7781",
               f"oci:{FIXTURES / 'busybox'}:latest", f"docker://{r.host}/lib/busybox:1")
        skopeo("copy", "-q", "--dest-tls-verify=false", "--dest-creds", "builder-a:pw-a-7781",
               f"oci:{_tools_image(d / 'tools')}:tools", f"docker://{r.host}/lib/tools:1")
        yield r
    finally:
        r.stop()
        token.stop()


def _tools_image(path: Path) -> Path:
    """busybox plus a layer of its own: the builder stage's base."""
    shutil.copytree(FIXTURES / "busybox", path)
    layout = Layout.open(path)
    mutator = Mutator(layout, refs.resolve(layout, "latest"))
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        info = tarfile.TarInfo("tools.txt")
        info.size = 6
        t.addfile(info, io.BytesIO(b"tools\n"))
    tar.seek(0)
    mutator.add_layer(tar, None)
    refs.set_tag(layout, "tools", mutator.commit())
    return path


def _auth_doc(user: str, host: str, password: str | None = None) -> str:
    secret = f"{user}:{password or USERS[user]}"
    return json.dumps({"auths": {host: {"auth": base64.b64encode(secret.encode()).decode()}}})


def _home(tmp_path: Path, user: str, host: str, password: str | None = None) -> dict:
    home = tmp_path / user
    home.mkdir()
    auth = home / "auth.json"
    auth.write_text(_auth_doc(user, host, password))
    client = Client(RegistryOptions(insecure=frozenset({host}), auth_files=[auth], retries=2, backoff=0.05))
    return {"home": home, "client": client}


def _build(h: dict, ctx: Path, cache_from: list[str], cache_to: str | None):
    client = h["client"]
    store = ImportingCacheStore(h["home"] / "cache", [parse_cache_spec(r, "--cache-from") for r in cache_from],
                                parse_cache_spec(cache_to, "--cache-to") if cache_to else None, client)
    out = io.StringIO()
    req = BuildRequest(context=ctx, layout=h["home"] / "out", cache_dir=h["home"] / "cache",
                       progress=Progress("plain", out), tags=["app"], jobs=1,
                       build_args={"SOURCE_DATE_EPOCH": SDE}, registry=client, cache=store)
    result = run_build(req)
    store.export()
    return result, out.getvalue(), store


@pytest.fixture
def ctx(reg):
    with shared_context({"Dockerfile": DOCKERFILE.format(host=reg.host), "one.txt": "one\n",
                         "three.txt": "three\n"}) as c:
        yield c


def test_second_user_is_all_cached_and_downloads_only_final_layers(tmp_path, reg, ctx, user2_home):
    cache = f"registry:{reg.host}/cache/app:buildcache"
    a = _home(tmp_path, "builder-a", reg.host)
    first, log_a, _ = _build(a, ctx, [], cache)
    assert "CACHED" not in log_a
    builder_layers = {d["digest"] for d in first.stages["builder"].image.layers}

    # the second user: its own credentials in ~/.docker/config.json, default
    # (empty) layout and cache under its own HOME, only --cache-from
    login = as_user2("sh", "-c", 'umask 077 && mkdir "$1/.docker" && cat > "$1/.docker/config.json"', "sh",
                      str(user2_home), input=_auth_doc("builder-b", reg.host))
    assert login.returncode == 0, login.stderr
    since = reg.log_size()
    b = orca_build_as_user2(user2_home, "build", "--progress", "plain", "--insecure-registry", reg.host,
                            "--cache-from", cache, "--build-arg", f"SOURCE_DATE_EPOCH={SDE}", "-t", "app", str(ctx),
                            cwd=ctx)
    assert b.returncode == 0, b.stderr
    assert b.stderr.count("CACHED") == STEPS, b.stderr
    assert "pw-b-9902" not in b.stderr + b.stdout

    # the same image as the first user's (a hit keeps the config's key order)
    assert b.stdout.strip() == first.descriptor["digest"]
    out = Layout.open(user2_home / ".local/share/orca/layout")
    assert refs.resolve(out, "app")[-1]["digest"] == first.descriptor["digest"]
    manifest = out.read_json(refs.resolve(out, "app")[-1], "manifest")
    final_layers = {d["digest"] for d in manifest["layers"]}
    assert builder_layers - final_layers  # the builder stage has layers of its own

    downloads = reg.blob_downloads(since)
    assert len(downloads) == len(set(downloads))  # nothing twice
    cache_config = json.loads(a["client"].repository(parse_cache_spec(cache, "--cache-to").ref).get_manifest()[0])["config"]
    configs = {json.loads(a["client"].repository(reference.parse(f"{reg.host}/lib/{name}:1")).get_manifest()[0])
               ["config"]["digest"] for name in ("busybox", "tools")}
    # the final layers, the bases' configs (for their environment) and the
    # records; no layer of the builder stage, not even its base's
    assert set(downloads) == final_layers | configs | {cache_config["digest"]}
    assert not set(downloads) & (builder_layers - final_layers)


def test_uncached_cached_and_registry_cache_builds_give_one_digest(tmp_path, reg, ctx):
    cache = f"registry:{reg.host}/cache/same:c"
    a = _home(tmp_path, "builder-a", reg.host)
    uncached, log, _ = _build(a, ctx, [], cache)
    assert "CACHED" not in log
    cached, log, _ = _build(a, ctx, [], None)
    assert log.count("CACHED") == STEPS
    b = _home(tmp_path, "builder-b", reg.host)
    remote, log, _ = _build(b, ctx, [cache], None)
    assert log.count("CACHED") == STEPS
    assert uncached.descriptor["digest"] == cached.descriptor["digest"] == remote.descriptor["digest"]


def test_partial_hit_unpacks_hit_layers_and_exports_them_to_another_ref(tmp_path, reg, ctx):
    first_ref = f"registry:{reg.host}/cache/partial:one"
    _build(_home(tmp_path, "builder-a", reg.host), ctx, [], first_ref)
    (ctx / "three.txt").write_text("three, changed\n")
    # the builder stage hits; the final stage runs from its first COPY on, and
    # its COPY --from must unpack the builder stage from layers never fetched yet
    second_ref = f"registry:{reg.host}/cache/partial-elsewhere:two"
    b = _home(tmp_path, "builder-b", reg.host)
    second, log, _ = _build(b, ctx, [first_ref], second_ref)
    assert log.count("CACHED") == 2
    out = Layout.open(b["home"] / "out")
    manifest = out.read_json(refs.resolve(out, "app")[-1], "manifest")
    assert all(out.has_blob(d["digest"]) for d in manifest["layers"])
    # what the second builder only saw as hits went to the other ref as well
    (tmp_path / "c").mkdir()
    c = _home(tmp_path / "c", "builder-b", reg.host)
    third, log, _ = _build(c, ctx, [second_ref], None)
    assert log.count("CACHED") == STEPS
    assert third.descriptor["digest"] == second.descriptor["digest"]


def test_cache_records_hold_no_credentials(tmp_path, reg, ctx):
    cache = f"registry:{reg.host}/cache/secretless:c"
    a = _home(tmp_path, "builder-a", reg.host)
    _build(a, ctx, [], cache)
    records = load_records(a["client"], parse_cache_spec(cache, "--cache-to").ref)
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
