"""`orca-build -o/--output`, `--push`, `--load`: what each output holds, as
its readers see it (skopeo, docker's own dockerd, tar, a registry)."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile

import pytest
from orca_build_helpers import ok, run_cli
from registry_server import skopeo
from umoci_py import refs
from umoci_py.cas import Layout
from umoci_py.errors import UmociError

from orca.outputs import Output, export

DOCKER_PEER = "/usr/local/libexec/orca-peers/docker-peer"  # installed by tools/setup-host
DOCKERFILE = """\
FROM BASE AS builder
COPY hello.txt /built/hello.txt

FROM BASE
COPY --from=builder /built/hello.txt /hello.txt
COPY --chown=1000:1000 owned.txt /srv/owned.txt
CMD ["cat", "/hello.txt"]
"""


@pytest.fixture
def ctx(tmp_path, busybox_layout):
    c = tmp_path / "ctx"
    c.mkdir()
    (c / "Dockerfile").write_text(DOCKERFILE.replace("BASE", f"oci:{busybox_layout}:latest"))
    (c / "hello.txt").write_text("hello from orca\n")
    (c / "owned.txt").write_text("mine\n")
    return c


def build(tmp_path, ctx, *args, input=None):
    return run_cli("--layout", str(tmp_path / "layout"), "--cache-dir", str(tmp_path / "cache"),
                   "--progress", "plain", *args, str(ctx), input=input)


def members(data: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            out[m.name] = (m, tar.extractfile(m).read() if m.isfile() else None)
    return out


def layout_tags(tmp_path) -> list[str]:
    path = tmp_path / "layout"
    return refs.list_tags(Layout.open(path)) if (path / "index.json").exists() else []


def test_oci_archive_is_read_by_skopeo_and_leaves_the_layout_alone(tmp_path, ctx):
    res = ok(build(tmp_path, ctx, "-t", "app:1", "-o", f"type=oci,dest={tmp_path / 'img.tar'}"))
    digest = res.stdout.strip().splitlines()[-1]
    config = json.loads(skopeo("inspect", "--config", f"oci-archive:{tmp_path / 'img.tar'}"))
    assert config["config"]["Cmd"] == ["cat", "/hello.txt"]
    raw = json.loads(skopeo("inspect", "--raw", f"oci-archive:{tmp_path / 'img.tar'}"))
    assert len(raw["layers"]) == 3  # busybox, two COPYs
    index = json.loads(members((tmp_path / "img.tar").read_bytes())["index.json"][1])
    assert index["manifests"][0]["digest"] == digest
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "app:1"
    assert layout_tags(tmp_path) == []  # -o without --load: nothing in the layout

    ok(build(tmp_path, ctx, "-t", "app:1", "--load", "-o", f"type=oci,dest={tmp_path / 'again.tar'}"))
    assert layout_tags(tmp_path) == ["app:1"]
    assert (tmp_path / "again.tar").read_bytes() == (tmp_path / "img.tar").read_bytes()


def test_oci_archive_to_stdout_and_as_a_directory(tmp_path, ctx):
    res = ok(build(tmp_path, ctx, "-o", "type=oci,dest=-"))
    got = members(res.stdout_bytes)
    assert json.loads(got["oci-layout"][1]) == {"imageLayoutVersion": "1.0.0"}
    manifest_digest = json.loads(got["index.json"][1])["manifests"][0]["digest"]
    assert f"blobs/sha256/{manifest_digest[7:]}" in got  # and no digest line mixed into the tar

    ok(build(tmp_path, ctx, "-o", f"type=oci,dest={tmp_path / 'dir'},tar=false"))
    config = json.loads(skopeo("inspect", "--config", f"oci:{tmp_path / 'dir'}"))
    assert config["config"]["Cmd"] == ["cat", "/hello.txt"]


@pytest.mark.slow
def test_docker_archive_is_loaded_and_run_by_docker(tmp_path, ctx):
    ok(build(tmp_path, ctx, "-t", "orca-out:1", "-o", f"type=docker,dest={tmp_path / 'd.tar'}"))
    manifest = json.loads(members((tmp_path / "d.tar").read_bytes())["manifest.json"][1])
    assert manifest[0]["RepoTags"] == ["orca-out:1"]
    # docker.io's dockerd, private to this run, through the one root command we may run
    with open(tmp_path / "d.tar", "rb") as f:
        peer = subprocess.run(["sudo", "-n", DOCKER_PEER, "load-run"], stdin=f, capture_output=True,
                              text=True, timeout=300)
    assert peer.returncode == 0, peer.stderr
    assert peer.stdout == "hello from orca\n"


def test_local_and_tar_outputs_hold_the_final_stage_files(tmp_path, ctx):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("kept\n")
    (out / "hello.txt").write_text("replaced\n")
    (out / "srv").write_text("a file where the image has a directory\n")
    (out / "bin").mkdir()
    (out / "bin/mine").write_text("merged with the image's bin\n")
    ok(build(tmp_path, ctx, "-o", f"type=local,dest={out}", "-o", f"type=tar,dest={tmp_path / 'files.tar'}"))
    assert (out / "hello.txt").read_text() == "hello from orca\n"
    assert (out / "keep.txt").read_text() == "kept\n"  # as buildx: written into the directory
    assert (out / "bin/mine").is_file()
    assert (out / "srv/owned.txt").read_text() == "mine\n" and (out / "bin/busybox").is_file()
    assert not (out / "built").exists()  # the builder stage is not the output
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    files = members((tmp_path / "files.tar").read_bytes())
    info, data = files["srv/owned.txt"]
    assert data == b"mine\n" and (info.uid, info.gid) == (1000, 1000)
    assert files["hello.txt"][1] == b"hello from orca\n" and files["bin/busybox"][0].uid == 0
    assert "built/hello.txt" not in files

    # the short forms: -o DIR is type=local, -o - is type=tar on stdout
    res = ok(build(tmp_path, ctx, "-o", str(tmp_path / "short"), "-o", "-"))
    assert (tmp_path / "short/hello.txt").read_text() == "hello from orca\n"
    assert members(res.stdout_bytes)["hello.txt"][1] == b"hello from orca\n"


def test_a_failing_output_leaves_nothing_behind(tmp_path, ctx):
    ok(build(tmp_path, ctx, "-t", "app"))
    layout = Layout.open(tmp_path / "layout")
    desc = refs.resolve(layout, "app")[-1]
    manifest = layout.read_json(desc, "manifest")
    last = layout.blob_path(manifest["layers"][-1]["digest"])
    last.chmod(0o644)
    last.write_bytes(last.read_bytes()[:-40])  # a truncated blob fails its digest check mid-export
    dests = tmp_path / "dests"
    dests.mkdir()
    for out in (Output("oci", str(dests / "img.tar")), Output("docker", str(dests / "d.tar")),
                Output("local", str(dests / "files")), Output("tar", str(dests / "files.tar"))):
        with pytest.raises(UmociError):
            export(layout, desc, out)
    assert list(dests.iterdir()) == []

    res = build(tmp_path, ctx, "-o", f"type=oci,dest={tmp_path / 'no/such/dir/img.tar'}")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "no/such/dir" in res.stderr.splitlines()[-1]


@pytest.mark.parametrize("value, message", [
    ("type=zip,dest=x", "unknown type 'zip'"),
    ("type=local", "needs dest="),
    ("type=oci,dest=x,bogus=1", "does not take bogus"),
    ("type=image,push=maybe", "expected true or false"),
])
def test_bad_outputs_are_one_line_errors(tmp_path, ctx, value, message):
    res = build(tmp_path, ctx, "-o", value)
    assert res.exit_code == 1 and message in res.stderr and res.stderr.count("\n") == 1, res.output


def test_two_outputs_on_stdout_and_push_without_tags_are_refused(tmp_path, ctx):
    res = build(tmp_path, ctx, "-o", "-", "-o", "type=oci,dest=-")
    assert res.exit_code == 1 and "both write to stdout" in res.stderr
    res = build(tmp_path, ctx, "--push")
    assert res.exit_code == 1 and "--push: no -t" in res.stderr


def remote_digest(reg, ref: str) -> str:
    return json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{reg.host}/{ref}"))["Digest"]


def test_push_sends_every_tag_and_registry_outputs_their_names(tmp_path, ctx, plain_registry):
    reg = plain_registry
    res = ok(build(tmp_path, ctx, "--insecure-registry", reg.host, "--push",
                   "-t", f"{reg.host}/team/app:1", "-t", f"{reg.host}/team/app:2", "-t", f"{reg.host}/other:x"))
    digest = res.stdout.strip().splitlines()[-1]
    for ref in ("team/app:1", "team/app:2", "other:x"):
        assert remote_digest(reg, ref) == digest
    assert sorted(layout_tags(tmp_path)) == sorted([f"{reg.host}/team/app:1", f"{reg.host}/team/app:2",
                                                    f"{reg.host}/other:x"])

    # today's `--push REF` spelled as buildx spells it; -t stays in the layout only
    res = ok(build(tmp_path, ctx, "--insecure-registry", reg.host, "-t", "local-only",
                   "-o", f"type=registry,name={reg.host}/team/named:1",
                   "-o", f'type=image,"name={reg.host}/team/named:2,{reg.host}/team/named:3",push=true'))
    digest = res.stdout.strip().splitlines()[-1]
    assert {remote_digest(reg, f"team/named:{n}") for n in (1, 2, 3)} == {digest}
    assert "local-only" not in layout_tags(tmp_path)


def test_what_goes_into_the_layout(tmp_path, ctx):
    ok(build(tmp_path, ctx, "-t", "cached-only", "-o", "type=cacheonly"))
    assert layout_tags(tmp_path) == []
    ok(build(tmp_path, ctx, "-t", "docker-load", "-o", "type=docker"))  # no dest: docker's --load
    assert layout_tags(tmp_path) == ["docker-load"]
    ok(build(tmp_path, ctx, "-t", "ignored", "-o", "type=image,name=named:1"))  # name= wins over -t, no push
    assert sorted(layout_tags(tmp_path)) == ["docker-load", "named:1"]
    res = ok(build(tmp_path, ctx, "-t", "plain"))  # no -o: the layout, as before
    assert refs.resolve(Layout.open(tmp_path / "layout"), "plain")[-1]["digest"] == res.stdout.strip()
