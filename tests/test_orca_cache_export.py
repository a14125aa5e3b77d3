"""`--cache-to/--cache-from type=local` (a directory a CI system saves and
restores) and buildx's long forms for registries: a second real user with an
empty cache gets CACHED steps, mode=min keeps only the built image's steps."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from fixtures_dir import FIXTURES
from orca_build_helpers import run_cli
from second_user import orca_build_as_user2, shared_context
from umoci_py import refs
from umoci_py.cas import Layout

from orca.cache_export import CacheSpec, load_local, parse_cache_spec
from orca.errors import BuildError

SDE = "1700000000"
DOCKERFILE = f"""\
FROM oci:{FIXTURES / 'busybox'}:latest AS builder
RUN echo built > /artifact && echo scratch > /intermediate
COPY one.txt /one.txt

FROM oci:{FIXTURES / 'busybox'}:latest
COPY two.txt /two.txt
RUN echo final > /final.txt
COPY --from=builder /artifact /artifact
"""
FINAL_STEPS, ALL_STEPS = 3, 5


@pytest.fixture
def ctx():
    with shared_context({"Dockerfile": DOCKERFILE, "one.txt": "one\n", "two.txt": "two\n"}) as c:
        yield c


def build(home: Path, ctx: Path, *args: str):
    res = run_cli("--layout", str(home / "layout"), "--cache-dir", str(home / "cache"),
                  "--progress", "plain", "--build-arg", f"SOURCE_DATE_EPOCH={SDE}", *args, str(ctx))
    assert res.exit_code == 0, res.output
    return res.stdout.strip().splitlines()[-1], res.stderr


def test_second_user_with_an_empty_cache_gets_cached_steps_from_a_directory(tmp_path, ctx, user2_home):
    shared = Path(tempfile.mkdtemp(prefix="orca-cache-dir-"))
    try:
        digest, log = build(tmp_path / "a", ctx, "--cache-to", f"type=local,dest={shared / 'c'},mode=max")
        assert "CACHED" not in log
        subprocess.run(["chmod", "-R", "a+rX", str(shared)], check=True)  # as a CI restore would leave it

        b = orca_build_as_user2(user2_home, "build", "--progress", "plain", "--build-arg", f"SOURCE_DATE_EPOCH={SDE}",
                                "--cache-from", f"type=local,src={shared / 'c'}", "-t", "app", str(ctx), cwd=ctx)
        assert b.returncode == 0, b.stderr
        assert b.stderr.count("CACHED") == ALL_STEPS, b.stderr
        assert b.stdout.strip() == digest  # the same image, from the directory's layers
        out = Layout.open(user2_home / ".local/share/orca/layout")
        manifest = out.read_json(refs.resolve(out, "app")[-1], "manifest")
        assert all(out.has_blob(d["digest"]) for d in manifest["layers"])
    finally:
        shutil.rmtree(shared)


def test_mode_min_exports_only_the_images_steps_and_a_second_export_replaces_the_first(tmp_path, ctx):
    d = tmp_path / "cache-dir"
    digest, _ = build(tmp_path / "a", ctx, "--cache-to", f"type=local,dest={d}")
    records, _ = load_local(CacheSpec("local", path=d))
    descriptions = sorted(r["description"] for r in records.values())
    assert not any("intermediate" in t or "one.txt" in t for t in descriptions), descriptions
    assert any("two.txt" in t for t in descriptions) and any("final" in t for t in descriptions)

    # a fresh cache: the builder stage runs again; the final stage is CACHED
    again, log = build(tmp_path / "b", ctx, "--cache-from", f"type=local,src={d}")
    assert again == digest and log.count("CACHED") == FINAL_STEPS

    build(tmp_path / "a", ctx, "--cache-to", f"type=local,dest={d},mode=max,tag=v2")
    layout = Layout.open(d)
    assert sorted(refs.list_tags(layout)) == ["latest", "v2"]
    records_max, _ = load_local(CacheSpec("local", path=d, tag="v2"))
    assert len(records_max) > len(records)
    held = set(layout.list_blobs())
    for record in records_max.values():
        assert {x["digest"] for x in record["image"]["layers"]} <= held


def test_buildx_long_registry_form(tmp_path, ctx, plain_registry):
    reg = plain_registry
    ref = f"{reg.host}/cache/app:c"
    digest, _ = build(tmp_path / "a", ctx, "--insecure-registry", reg.host,
                      "--cache-to", f"type=registry,ref={ref},mode=max")
    again, log = build(tmp_path / "b", ctx, "--insecure-registry", reg.host, "--cache-from", f"type=registry,ref={ref}")
    assert again == digest and log.count("CACHED") == ALL_STEPS
    # buildx's bare reference is a registry cache too
    _, log = build(tmp_path / "c", ctx, "--insecure-registry", reg.host, "--cache-from", ref)
    assert log.count("CACHED") == ALL_STEPS


@pytest.mark.parametrize("flag, text, want", [
    ("--cache-to", "registry:reg.example/a:1", ("registry", "max")),
    ("--cache-to", "type=registry,ref=reg.example/a:1", ("registry", "min")),
    ("--cache-to", "type=registry,ref=reg.example/a:1,mode=max,ignore-error=true", ("registry", "max")),
    ("--cache-from", "reg.example/a:1", ("registry", "max")),
    ("--cache-to", "type=local,dest=/x,mode=max", ("local", "max")),
    ("--cache-from", "type=local,src=/x", ("local", "min")),
])
def test_cache_specs(flag, text, want):
    spec = parse_cache_spec(text, flag)
    assert (spec.type, spec.mode) == want


@pytest.mark.parametrize("flag, text, message", [
    ("--cache-to", "type=local,src=/x", "unknown key src"),
    ("--cache-from", "type=local,dest=/x", "unknown key dest"),
    ("--cache-from", "type=local", "needs src=DIR"),
    ("--cache-to", "type=gha", "only registry and local"),
    ("--cache-to", "type=registry,ref=r.example/a,mode=all", "expected min or max"),
    ("--cache-to", "type=registry", "needs ref="),
])
def test_bad_cache_specs(flag, text, message):
    with pytest.raises(BuildError) as info:
        parse_cache_spec(text, flag)
    assert message in str(info.value) and "\n" not in str(info.value)
