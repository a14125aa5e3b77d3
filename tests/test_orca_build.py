"""orca-build end to end without RUN: layers, config, history, cache, reproducibility, CLI."""

import gzip
import io
import tarfile


from orca_build_helpers import cli_build, image, run_cli


def _layer_names(layout, desc):
    data = gzip.decompress(layout.read_blob(desc["digest"], desc["size"]))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: m for m in tf.getmembers()}


def _context(tmp_path, busybox_layout, dockerfile):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile.replace("BASE", f"oci:{busybox_layout}:latest"))
    (ctx / "hello.txt").write_text("hello\n")
    (ctx / "junk.log").write_text("ignored\n")
    (ctx / ".dockerignore").write_text("*.log\n")
    return ctx


DOCKERFILE = """\
FROM BASE
ARG WHO=world
ENV GREETING=hi-$WHO
COPY --chown=1000:1000 hello.txt *.log* /app/
WORKDIR /app
ENTRYPOINT ["/bin/cat"]
CMD ["hello.txt"]
LABEL who=$WHO
"""


def test_copy_build_layers_config_history_and_cache(tmp_path, busybox_layout):
    ctx = _context(tmp_path, busybox_layout, DOCKERFILE)
    first = cli_build(tmp_path, ctx, "-t", "app")
    assert first.exit_code == 0, first.output
    layout, desc, manifest, config = image(tmp_path, "app")
    assert first.output.strip().splitlines()[-1] == desc["digest"]
    members = _layer_names(layout, manifest["layers"][-1])
    assert "app/hello.txt" in members and not any(n.endswith(".log") for n in members)
    assert (members["app/hello.txt"].uid, members["app/hello.txt"].gid) == (1000, 1000)
    cfg = config["config"]
    assert "GREETING=hi-world" in cfg["Env"]
    assert cfg["Entrypoint"] == ["/bin/cat"] and cfg["Cmd"] == ["hello.txt"]
    assert cfg["WorkingDir"] == "/app" and cfg["Labels"] == {"who": "world"}
    hist = config["history"][-7:]
    assert hist[0]["created_by"] == "ARG WHO=world" and hist[0]["empty_layer"]
    assert hist[2]["created_by"].startswith("COPY --chown=1000:1000 hello.txt")
    assert hist[2]["created_by"].endswith(" # buildkit") and "empty_layer" not in hist[2]
    assert all(h["comment"] == "buildkit.dockerfile.v0" for h in hist)

    second = cli_build(tmp_path, ctx, "-t", "app")
    assert second.exit_code == 0, second.output
    assert second.output.count("CACHED") == 2  # COPY and WORKDIR

    (ctx / "other.log").write_text("still ignored")  # ignored files never reach a key
    assert cli_build(tmp_path, ctx).output.count("CACHED") == 2
    (ctx / "hello.txt").write_text("changed\n")
    third = cli_build(tmp_path, ctx, "--build-arg", "WHO=you")
    assert third.exit_code == 0 and "CACHED" not in third.output


def test_source_date_epoch_gives_identical_digests(tmp_path, busybox_layout):
    ctx = _context(tmp_path, busybox_layout, DOCKERFILE)
    a = cli_build(tmp_path, ctx, "--no-cache", "--build-arg", "SOURCE_DATE_EPOCH=1700000000")
    (ctx / "hello.txt").touch()
    b = cli_build(tmp_path, ctx, "--no-cache", "--build-arg", "SOURCE_DATE_EPOCH=1700000000")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert a.output.splitlines()[-1] == b.output.splitlines()[-1]


def test_copy_outside_context_fails_with_location(tmp_path, busybox_layout):
    ctx = _context(tmp_path, busybox_layout, "FROM BASE\nCOPY ../etc/passwd /x\n")
    res = cli_build(tmp_path, ctx)
    assert res.exit_code == 1
    assert "Dockerfile:2: COPY: source '../etc/passwd' is outside the build context" in res.output


def test_missing_base_is_a_clear_error(tmp_path, busybox_layout):
    ctx = _context(tmp_path, busybox_layout, "FROM nosuch:tag\n")
    res = cli_build(tmp_path, ctx)
    # names the line and what was looked for (the layout, or a registry once H's resolver is in)
    assert res.exit_code == 1 and "Dockerfile:1: " in res.output and "nosuch:tag" in res.output


def test_cache_ls_and_prune(tmp_path, busybox_layout):
    ctx = _context(tmp_path, busybox_layout, DOCKERFILE)
    assert cli_build(tmp_path, ctx).exit_code == 0
    ls = run_cli("cache", "ls", "--cache-dir", str(tmp_path / "cache"))
    assert "COPY --chown=1000:1000" in ls.output
    pr = run_cli("prune", "--cache-dir", str(tmp_path / "cache"))
    assert pr.exit_code == 0 and pr.output.startswith("removed 3 cache records")  # 2 steps, the image's times
    assert run_cli("cache", "ls", "--cache-dir", str(tmp_path / "cache")).output == ""


COPY_FLAGS = """\
FROM BASE
COPY --chmod=u+x,go-w --exclude=*.log --exclude=skip src/ /plain/
COPY --parents src/./deep/a.txt src/deep/b.txt /kept/
"""


def test_copy_symbolic_chmod_exclude_and_parents(tmp_path, busybox_layout):
    ctx = _context(tmp_path, busybox_layout, COPY_FLAGS)
    (ctx / ".dockerignore").unlink()
    (ctx / "src/deep").mkdir(parents=True)
    (ctx / "src/skip").mkdir()
    for name in ("run.sh", "x.log", "skip/inner", "deep/a.txt", "deep/b.txt"):
        (ctx / "src" / name).write_text(name)
        (ctx / "src" / name).chmod(0o664)
    res = cli_build(tmp_path, ctx, "-t", "flags")
    assert res.exit_code == 0, res.output
    layout, _, manifest, _ = image(tmp_path, "flags")
    plain = _layer_names(layout, manifest["layers"][-2])
    assert plain["plain/run.sh"].mode == 0o744
    assert plain["plain/deep/a.txt"].mode == 0o744
    assert not any(n.endswith("x.log") or "skip" in n for n in plain)
    kept = _layer_names(layout, manifest["layers"][-1])
    assert {n for n in kept if kept[n].isfile()} == {"kept/deep/a.txt", "kept/src/deep/b.txt"}


MERGE = """\
FROM BASE AS gen
COPY input.txt /in/
RUN cut -c1-4 /in/input.txt > /out.txt
FROM BASE
COPY --from=gen /out.txt /final.txt
RUN cat /final.txt > /copy.txt
"""


def test_copy_from_is_keyed_by_the_copied_content(tmp_path, busybox_layout):
    ctx = _context(tmp_path, busybox_layout, MERGE)
    (ctx / "input.txt").write_text("same-prefix-1\n")
    first = cli_build(tmp_path, ctx)
    assert first.exit_code == 0, first.output
    (ctx / "input.txt").write_text("same-prefix-2\n")  # gen re-runs, its /out.txt does not change
    second = cli_build(tmp_path, ctx)
    assert second.exit_code == 0, second.output
    lines = second.output.splitlines()
    cached = {line.split()[0] for line in lines if line.endswith("CACHED")}
    final_steps = {line.split()[0] for line in lines if "[stage-1]" in line}
    gen_steps = {line.split()[0] for line in lines if "[gen]" in line}
    assert final_steps <= cached and not gen_steps & cached
    (ctx / "input.txt").write_text("diff-prefix\n")
    third = cli_build(tmp_path, ctx, "-t", "merged")
    assert "CACHED" not in third.output
    layout, _, manifest, _ = image(tmp_path, "merged")
    assert _layer_names(layout, manifest["layers"][-1])["copy.txt"].size == 5


def test_expose_ranges_give_one_port_each(tmp_path, busybox_layout):
    ctx = _context(tmp_path, busybox_layout, "FROM BASE\nARG P=53/UDP\nEXPOSE 8000-8002 $P\n")
    res = cli_build(tmp_path, ctx, "-t", "app")
    assert res.exit_code == 0, res.output
    config = image(tmp_path, "app")[3]
    assert config["config"]["ExposedPorts"] == {"8000/tcp": {}, "8001/tcp": {}, "8002/tcp": {}, "53/udp": {}}
    (tmp_path / "bad").mkdir()
    bad = _context(tmp_path / "bad", busybox_layout, "FROM BASE\nEXPOSE 90-80\n")
    res = cli_build(tmp_path, bad)
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1].endswith("Dockerfile:2: invalid range specified for container port: 90-80")
