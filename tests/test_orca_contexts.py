"""Build contexts as `docker buildx build` takes them: `-f -`, the context `-`
(a tar, or a bare Dockerfile, on stdin) and `--build-context NAME=` a
directory, an OCI layout or a registry image, read by FROM and COPY --from."""

from __future__ import annotations

import gzip
import io
import tarfile

from orca_build_helpers import ok, run_cli
from registry_server import skopeo
from umoci_py import refs
from umoci_py.cas import Layout


def build(tmp_path, ctx, *args, input=None):
    return run_cli("--layout", str(tmp_path / "layout"), "--cache-dir", str(tmp_path / "cache"),
                   "--progress", "plain", "-o", f"type=local,dest={tmp_path / 'files'}", *args, str(ctx), input=input)


def image_config(tmp_path, tag: str) -> dict:
    layout = Layout.open(tmp_path / "layout")
    manifest = layout.read_json(refs.resolve(layout, tag)[-1], "manifest")
    return layout.read_json(manifest["config"], "config")


def test_dockerfile_on_stdin(tmp_path, busybox_layout):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY nothing /\n")  # not the one built
    (ctx / "a.txt").write_text("from the context\n")
    ok(build(tmp_path, ctx, "-f", "-", input=f"FROM oci:{busybox_layout}:latest\nCOPY a.txt /a.txt\n"))
    assert (tmp_path / "files/a.txt").read_text() == "from the context\n"


def test_context_on_stdin_as_a_tar_or_a_bare_dockerfile(tmp_path, busybox_layout):
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w:gz") as t:
        for name, data in (("Dockerfile", f"FROM oci:{busybox_layout}:latest\nCOPY sub/b.txt /b.txt\n"),
                           ("sub/b.txt", "inside the tar\n"), ("../escape.txt", "never written\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data.encode())
            t.addfile(info, io.BytesIO(data.encode()))
    ok(build(tmp_path, "-", input=tar.getvalue()))
    assert (tmp_path / "files/b.txt").read_text() == "inside the tar\n"
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "cache/escape.txt").exists()

    ok(build(tmp_path, "-", "-t", "bare", "--load", input=f"FROM oci:{busybox_layout}:latest\nCMD [\"true\"]\n"))
    assert image_config(tmp_path, "bare")["config"]["Cmd"] == ["true"]

    res = build(tmp_path, "-", "-f", "-", input="FROM scratch\n")
    assert res.exit_code == 1 and "cannot both read stdin" in res.stderr
    res = build(tmp_path, "-", input=tar.getvalue()[:40])
    assert res.exit_code == 1 and "context on stdin: corrupt compressed data" in res.stderr
    broken = bytearray(gzip.decompress(tar.getvalue()))
    broken[148:156] = b"0000000\0"  # the first header's checksum
    res = build(tmp_path, "-", input=bytes(broken))
    assert res.exit_code == 1 and "context on stdin" in res.stderr.splitlines()[-1], res.output


def test_build_context_of_each_kind(tmp_path, busybox_layout, plain_registry):
    reg = plain_registry
    skopeo("copy", "-q", "--dest-tls-verify=false", f"oci:{busybox_layout}:latest",
           f"docker://{reg.host}/lib/busybox:1")
    extra = tmp_path / "extra"
    (extra / "deep").mkdir(parents=True)
    (extra / "deep/x.txt").write_text("named directory\n")
    (extra / "skipped.log").write_text("ignored by its own .dockerignore\n")
    (extra / ".dockerignore").write_text("*.log\n")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    # none of these names exists anywhere but in --build-context
    (ctx / "Dockerfile").write_text(
        "FROM registry-base AS from-registry\n"
        "FROM layout-base\n"
        "COPY --from=extra /deep/x.txt /x.txt\n"
        "COPY --from=from-registry /bin/busybox /registry-busybox\n"
        "FROM extra AS dir-image\n"
        "FROM layout-base\n"
        "COPY --from=dir-image / /dir-image/\n"
        "COPY --from=1 /x.txt /registry-busybox /\n")
    ok(build(tmp_path, ctx, "--insecure-registry", reg.host,
             "--build-context", f"extra={extra}",
             "--build-context", f"layout-base=oci-layout://{busybox_layout}:latest",
             "--build-context", f"registry-base=docker-image://{reg.host}/lib/busybox:1"))
    files = tmp_path / "files"
    assert (files / "x.txt").read_text() == "named directory\n"
    assert (files / "registry-busybox").read_bytes() == (files / "bin/busybox").read_bytes()
    assert (files / "dir-image/deep/x.txt").read_text() == "named directory\n"
    assert not (files / "dir-image/skipped.log").exists()

    res = build(tmp_path, ctx, "--build-context", "extra=git://example.invalid/repo.git")
    assert res.exit_code == 1 and "no git or HTTP contexts" in res.stderr
    res = build(tmp_path, ctx, "--build-context", f"extra={tmp_path / 'absent'}")
    assert res.exit_code == 1 and "not a directory" in res.stderr


def test_a_build_context_replaces_the_stage_of_its_name(tmp_path, busybox_layout):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f.txt").write_text("stage\n")
    (ctx / "Dockerfile").write_text(f"FROM oci:{busybox_layout}:latest AS thing\nCOPY f.txt /f.txt\n"
                                    f"FROM oci:{busybox_layout}:latest\nCOPY --from=thing /f.txt /got.txt\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "f.txt").write_text("context\n")
    ok(build(tmp_path, ctx, "--build-context", f"thing={other}"))
    assert (tmp_path / "files/got.txt").read_text() == "context\n"
