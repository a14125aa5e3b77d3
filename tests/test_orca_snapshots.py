"""The snapshot store and overlayfs working rootfs of orca-build.

Layers made from overlay uppers are byte for byte the ones the copy fallback
makes by walking the tree; gc never takes a snapshot a running build uses;
builds killed at random moments leave nothing that outlives the next build
plus prune.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from orca_build_helpers import ORCA
from umoci_py.cas import Layout
from umoci_py_helpers import layer_members, manifest_of, validate_layout

FALLBACK_NOTE = "working rootfs by copy"

CHANGES = """\
FROM oci:{base}:latest
RUN mkdir -p /d/sub && echo a > /d/sub/f && echo keep > /keep && echo gone > /gone \\
    && mkdir /tree && echo x > /tree/x && mkdir /emptied && echo e > /emptied/e
RUN echo changed > /keep && rm /gone && rm -rf /d && echo file > /d \\
    && chown 1234:5678 /etc/group && chmod 600 /etc/passwd && mknod /node c 1 3 \\
    && rm -rf /tree && mkdir /tree && echo y > /tree/y && rm /emptied/e
RUN rm /d && mkdir -p /d/again && echo back > /d/again/f && ln /tree/y /tree/y2 \\
    && chown 42:43 /tree/y && touch -d @1600000000 /keep && chmod 640 /node /etc/group
COPY --chown=7:8 files/ /copied/
RUN rm -rf /copied/sub && echo over > /copied/top && ln -s /copied/top /copied/link
"""


def orca(*args, env=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*ORCA, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def snapshots(cache: Path) -> set[str]:
    root = cache / "snapshots"
    return {p.name for p in root.iterdir() if len(p.name) == 64} if root.exists() else set()


def leftovers(cache: Path) -> list[str]:
    """What a build leaves in the cache dir besides records, blobs, mounts and snapshots."""
    out = [p.name for p in cache.iterdir() if p.name.startswith(("build-", ".reclaim-"))]
    out += [p.name for p in (cache / "snapshots").iterdir() if p.name.startswith(".reclaim-")]
    return out


def test_overlay_and_copy_give_the_same_layers(busybox_layout, tmp_path):
    ctx = tmp_path / "ctx"
    (ctx / "files" / "sub").mkdir(parents=True)
    (ctx / "files" / "top").write_text("top\n")
    (ctx / "files" / "sub" / "s").write_text("s\n")
    (ctx / "Dockerfile").write_text(CHANGES.format(base=busybox_layout))

    def build_both() -> dict[str, list[str]]:
        digests = {}
        for mode in ("auto", "copy"):
            out = tmp_path / f"out-{mode}"
            proc = orca("--layout", out, "--cache-dir", tmp_path / f"cache-{mode}", "--progress", "plain",
                        "-t", "x", ctx, env={"ORCA_SNAPSHOTTER": mode, "SOURCE_DATE_EPOCH": "1700000000"})
            assert (FALLBACK_NOTE in proc.stderr) == (mode == "copy"), proc.stderr
            digests[mode] = [d["digest"] for d in manifest_of(out, "x")["layers"]]
        return digests

    digests = build_both()
    for mode in ("auto", "copy"):  # the fallback keeps the same store
        assert len(snapshots(tmp_path / f"cache-{mode}")) == 1 + 5  # the base and every step
    assert digests["auto"] == digests["copy"]
    # a step more, in a build that finds the snapshots on disk: the tree it is
    # diffed against is made of what each of them changed
    (ctx / "Dockerfile").write_text(CHANGES.format(base=busybox_layout)
                                    + "RUN rm -rf /copied /d/again/f && chmod 700 /d/again && echo z > /keep\n")
    again = build_both()
    assert again["auto"] == again["copy"] and again["auto"][:-1] == digests["auto"]
    top = manifest_of(tmp_path / "out-auto", "x")["layers"][-1]
    last = {m.name: m for m in layer_members(tmp_path / "out-auto", top)}
    assert {".wh.copied", "d/again/.wh.f", "keep"} <= set(last) and last["d/again"].mode == 0o700
    # one step more, in the fallback, on each cache dir: copied from the overlay
    # path's snapshots (opaque directories, whiteout devices) or from its own
    with open(ctx / "Dockerfile", "a") as f:
        f.write("RUN ls -R /tree /d /etc > /listing && rm /keep\n")
    for mode in ("auto", "copy"):
        out = tmp_path / f"out-{mode}"
        orca("--layout", out, "--cache-dir", tmp_path / f"cache-{mode}", "--progress", "quiet", "-t", "x", ctx,
             env={"ORCA_SNAPSHOTTER": "copy", "SOURCE_DATE_EPOCH": "1700000000"})
        layers = [d["digest"] for d in manifest_of(out, "x")["layers"]]
        assert layers[:-1] == again["copy"]
        digests[mode] = layers
    assert digests["auto"] == digests["copy"]
    (listing,) = [m for m in layer_members(tmp_path / "out-auto", manifest_of(tmp_path / "out-auto", "x")["layers"][-1])
                  if m.name == "listing"]
    assert listing.size > 0
    # and the layers hold what the steps did
    out = tmp_path / "out-auto"
    layers = manifest_of(out, "x")["layers"]
    second = {m.name: m for m in layer_members(out, layers[2])}
    assert {".wh.gone", "tree/.wh.x", "emptied/.wh.e", ".wh.d"} <= set(second)  # d: a type change
    assert second["d"].isreg() and (second["etc/group"].uid, second["etc/group"].gid) == (1234, 5678)
    assert second["etc/passwd"].mode == 0o600 and second["node"].ischr()
    third = {m.name: m for m in layer_members(out, layers[3])}
    assert third["tree/y2"].islnk() or third["tree/y"].islnk()
    # exported by a hard link to the cache's blob, not a copy
    assert os.stat(out / "blobs/sha256" / layers[-1]["digest"].split(":")[1]).st_nlink == 2
    assert third["d"].isdir() and (third["tree/y"].uid, third["tree/y"].gid) == (42, 43)
    # a chmod copies a lower file up with its markers: the device, the owner
    assert third["node"].ischr() and (third["node"].devmajor, third["node"].mode) == (1, 0o640)
    assert (third["etc/group"].uid, third["etc/group"].gid, third["etc/group"].mode) == (1234, 5678, 0o640)


def test_a_big_layer_compressed_beside_the_next_step_is_the_layer_the_copy_path_writes(busybox_layout, tmp_path):
    # 2 MB: past orca.snapshot.INLINE_LAYER, so the overlay path writes the blob
    # on the layer jobs' thread while the next RUN runs; the smaller layers inline
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "big").write_bytes(random.Random(5).randbytes(2_000_000))
    (ctx / "Dockerfile").write_text(f"FROM oci:{busybox_layout}:latest\nCOPY big /big\n"
                                    "RUN wc -c /big > /size\nCOPY big /again\n")
    digests = {}
    for mode in ("auto", "copy"):
        out = tmp_path / f"out-{mode}"
        orca("--layout", out, "--cache-dir", tmp_path / f"cache-{mode}", "--progress", "quiet", "-t", "x", ctx,
             env={"ORCA_SNAPSHOTTER": mode, "SOURCE_DATE_EPOCH": "1700000000"})
        (tmp_path / f"view-{mode}").mkdir()
        validate_layout(out, tmp_path / f"view-{mode}")
        layers = manifest_of(out, "x")["layers"]
        digests[mode] = [d["digest"] for d in layers]
        members = {m.name: m for m in layer_members(out, layers[-3])}
        assert members["big"].size == 2_000_000
        assert {m.name for m in layer_members(out, layers[-2])} - {"."} == {"size"}
    assert digests["auto"] == digests["copy"]


def test_a_base_of_several_layers_is_extracted_by_both_paths_into_the_same_tree(busybox_layout, tmp_path):
    """A fresh cache dir FROM an image of four layers: the overlay path extracts
    each layer through an overlay on the ones below, the fallback into its
    copied rootfs (a walk finds what each changed).  A step over it sees the
    same tree and writes the same layer, and the base's snapshots are equal."""
    base_ctx, base = tmp_path / "base-ctx", tmp_path / "base"
    base_ctx.mkdir()
    (base_ctx / "Dockerfile").write_text(
        f"FROM oci:{busybox_layout}:latest\n"
        "RUN mkdir -p /d/sub /d/gone && echo a > /d/a && echo b > /d/sub/b && ln /d/a /d/hard && echo g > /d/gone/g\n"
        "RUN rm -rf /d/gone /etc/group && echo c > /d/c && chmod 700 /d/sub && chown 3:4 /d/sub/b && mknod /d/n c 1 3\n"
        "RUN rm /d/hard && rm -rf /d/sub && mkdir /d/sub && echo new > /d/sub/b2 && echo a2 >> /d/a\n")
    orca("--layout", base, "--cache-dir", tmp_path / "base-cache", "--progress", "quiet", "-t", "base", base_ctx,
         env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert len(manifest_of(base, "base")["layers"]) == 4
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    # what the step sees, sorted (readdir orders differ), but directories' link
    # counts: overlayfs gives a merged directory 1
    listing = ("(find /d /etc -type f -exec stat -c '%n %a %u %g %s %h' {} + "
               "&& find /d /etc ! -type f -exec stat -c '%n %a %u %g %F' {} +) | sort > /listing")
    (ctx / "Dockerfile").write_text(f"FROM oci:{base}:base\n"
                                    f"RUN {listing} && rm /d/c && chown 5:6 /d/a && echo x > /d/sub/x\n")
    layers, changes = {}, {}
    for mode in ("auto", "copy"):
        out, cache = tmp_path / f"out-{mode}", tmp_path / f"cache-{mode}"
        proc = orca("--layout", out, "--cache-dir", cache, "--progress", "plain", "-t", "x", ctx,
                    env={"ORCA_SNAPSHOTTER": mode, "SOURCE_DATE_EPOCH": "1700000000"})
        assert (FALLBACK_NOTE in proc.stderr) == (mode == "copy"), proc.stderr
        layers[mode] = [d["digest"] for d in manifest_of(out, "x")["layers"]]
        changes[mode] = {sid: json.loads((cache / "snapshots" / sid / "changes.json").read_text())
                         for sid in snapshots(cache)}
    assert layers["auto"] == layers["copy"]
    assert layers["auto"][:4] == [d["digest"] for d in manifest_of(base, "base")["layers"]]
    # the base's four snapshots (the step's holds its own files' real times)
    extracted = {sid: doc for sid, doc in changes["auto"].items() if "listing" not in doc["entries"]}
    assert len(changes["auto"]) == 5 and len(extracted) == 4
    assert {sid: changes["copy"].get(sid) for sid in extracted} == extracted
    top = {m.name: m for m in layer_members(tmp_path / "out-auto", manifest_of(tmp_path / "out-auto", "x")["layers"][-1])}
    assert {"listing", "d/.wh.c", "d/a", "d/sub/x"} <= set(top) and (top["d/a"].uid, top["d/a"].gid) == (5, 6)


def test_the_fallback_copies_a_stage_from_the_store_without_reading_the_base_layer(busybox_layout, tmp_path):
    cache, out, ctx = tmp_path / "cache", tmp_path / "out", tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("1\n")
    (ctx / "Dockerfile").write_text(f"FROM oci:{busybox_layout}:latest AS tools\nCOPY f /f\nRUN cat /f /f > /g\n"
                                    "FROM scratch\nCOPY --from=tools /g /g\n")  # the export needs no base layer

    def build(check=True):
        return orca("--layout", out, "--cache-dir", cache, "--progress", "plain", "-t", "x", ctx,
                    env={"ORCA_SNAPSHOTTER": "copy"}, check=check)

    assert FALLBACK_NOTE in build().stderr
    # every copy of the base's layer blobs garbled (new files: hard links to them stay as they were)
    garbled = 0
    for desc in manifest_of(busybox_layout, "latest")["layers"]:
        for path in [p for p in tmp_path.rglob(desc["digest"].split(":")[1]) if p.is_file()]:
            (tmp_path / "garbage").write_bytes(b"\0" * path.stat().st_size)
            os.replace(tmp_path / "garbage", path)
            garbled += 1
    assert garbled >= 2  # the base's layout and the cache's
    (ctx / "f").write_text("2\n")
    build()
    (g,) = [m for m in layer_members(out, manifest_of(out, "x")["layers"][-1]) if m.name == "g"]
    assert g.size == 4
    # without the snapshots, the stage is made from the base's blobs again: the build fails
    orca("prune", "--cache-dir", cache)
    (ctx / "f").write_text("3\n")
    failed = build(check=False)
    assert failed.returncode != 0 and "digest mismatch" in failed.stderr, failed.stderr


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("snapshotter", ["auto", "copy"])
def test_gc_never_removes_a_snapshot_a_running_build_uses(busybox_layout, tmp_path, snapshotter):
    cache, out = tmp_path / "cache", tmp_path / "out"
    env = {"ORCA_SNAPSHOTTER": snapshotter}
    other = tmp_path / "other"
    other.mkdir()
    (other / "Dockerfile").write_text(f"FROM oci:{busybox_layout}:latest\nRUN echo 1 > /one\n")
    orca("--layout", out, "--cache-dir", cache, "--progress", "quiet", other, env=env)
    unused = snapshots(cache)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM oci:{busybox_layout}:latest\nRUN echo 2 > /two\n"
        "RUN --mount=type=cache,id=signal,target=/signal "
        "touch /signal/started && while [ ! -e /signal/go ]; do sleep 0.05; done && echo 3 > /three\n")
    signal = cache / "mounts" / hashlib.sha256(b"signal").hexdigest()
    build = subprocess.Popen([*ORCA, "--layout", out, "--cache-dir", cache, "--progress", "quiet",
                              "-t", "held", ctx], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, **env})
    try:
        _wait_for(signal / "started", build)
        in_use = snapshots(cache) - unused | {s for s in unused if _is_base(cache, s)}
        pruned = orca("prune", "--cache-dir", cache, "--keep-storage", "0")
        assert pruned.stdout.startswith("removed 1 layer snapshots"), pruned.stdout
        assert snapshots(cache) == in_use  # the other build's step went, the base and /two stayed
        (signal / "go").touch()
        assert build.wait() == 0, build.communicate()
    finally:
        build.kill()
        build.wait()
    members = {m.name for m in layer_members(out, manifest_of(out, "held")["layers"][-1])}
    assert "three" in members
    orca("prune", "--cache-dir", cache)
    assert snapshots(cache) == set() and leftovers(cache) == []


def _is_base(cache: Path, sid: str) -> bool:
    return json.loads((cache / "snapshots" / sid / "meta.json").read_text())["parent"] is None


def test_builds_killed_at_random_leave_nothing_after_the_next_build_and_prune(busybox_layout, tmp_path):
    rng = random.Random(1212)
    cache, out = tmp_path / "cache", tmp_path / "out"

    def start(i: int) -> subprocess.Popen:
        ctx = tmp_path / f"ctx{i}"
        ctx.mkdir()
        (ctx / "f").write_bytes(b"%d\n" % i * 20000)
        (ctx / "Dockerfile").write_text(f"FROM oci:{busybox_layout}:latest\nCOPY f /f\n"
                                        f"RUN cat /f /f > /g && rm -rf /usr && echo {i % 3} > /h\nCOPY f /again\n")
        return subprocess.Popen([*ORCA, "--layout", out, "--cache-dir", cache, "--progress", "quiet",
                                 "-t", f"b{i}", ctx], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def finish(procs) -> int:
        kills = 0
        for p in procs:
            errors = p.communicate()[1]
            kills += p.returncode == -9
            assert p.returncode in (0, -9), errors
        return kills

    began = time.monotonic()
    assert finish([start(j) for j in range(3)]) == 0  # the base extracted; how long three builds take
    duration = time.monotonic() - began
    kills = 0
    for rnd in range(1, 5):
        procs = [start(rnd * 3 + j) for j in range(3)]
        began = time.monotonic()
        for delay, victim in sorted(((rng.uniform(0.05, duration * 0.9), p) for p in rng.sample(procs, 2)),
                                    key=lambda t: t[0]):
            time.sleep(max(0.0, delay - (time.monotonic() - began)))
            victim.kill()
        kills += finish(procs)
        (tmp_path / f"check{rnd}").mkdir()
        validate_layout(out, tmp_path / f"check{rnd}")
    # Killing before the builds are over cannot miss often, however loaded the host.
    assert kills >= 4
    last = start(100)
    assert last.wait() == 0, last.communicate()[1]
    assert leftovers(cache) == []
    Layout.open(out)
    validate_layout(out, tmp_path)
    orca("prune", "--cache-dir", cache)
    assert snapshots(cache) == set() and leftovers(cache) == []
    assert sorted(p.name for p in (cache / "snapshots").iterdir()) == [".lock", "empty"]


def test_a_build_past_the_budget_trims_the_snapshots_it_no_longer_uses(busybox_layout, tmp_path):
    cache, ctx = tmp_path / "cache", tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM oci:{busybox_layout}:latest\nRUN echo 1 > /one\n")
    orca("--layout", tmp_path / "out", "--cache-dir", cache, "--progress", "quiet", ctx)
    assert len(snapshots(cache)) == 2
    (ctx / "Dockerfile").write_text(f"FROM oci:{busybox_layout}:latest\nRUN echo 2 > /two\n")
    orca("--layout", tmp_path / "out", "--cache-dir", cache, "--progress", "quiet", ctx,
         env={"ORCA_CACHE_BUDGET": "1"})
    assert snapshots(cache) == set() and leftovers(cache) == []


def test_more_layers_than_one_page_of_mount_options_holds(busybox_layout, tmp_path):
    """45 snapshots' paths pass mount(2)'s one-page limit: fsconfig's lowerdir+ takes them."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    steps = "".join(f"COPY f{i} /files/\n" for i in range(45))
    for i in range(45):
        (ctx / f"f{i}").write_text(f"{i}\n")
    (ctx / "Dockerfile").write_text(f"FROM oci:{busybox_layout}:latest\n{steps}RUN cat /files/* > /all\n")
    out = tmp_path / "out"
    proc = orca("--layout", out, "--cache-dir", tmp_path / "cache", "--progress", "plain", "-t", "x", ctx)
    assert FALLBACK_NOTE not in proc.stderr
    lowers = len(str(tmp_path / "cache/snapshots" / ("0" * 64) / "diff")) * 46
    assert lowers > 4096
    layers = manifest_of(out, "x")["layers"]
    assert len(layers) == 1 + 45 + 1
    top = {m.name: m for m in layer_members(out, layers[-1])}
    assert top["all"].size == sum(len(f"{i}\n") for i in range(45))


def test_context_digests_kept_between_builds_still_see_a_same_size_same_mtime_edit(busybox_layout, tmp_path):
    ctx, out = tmp_path / "ctx", tmp_path / "out"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM oci:{busybox_layout}:latest\nCOPY f /f\n")
    (ctx / "f").write_text("one\n")
    orca("--layout", out, "--cache-dir", tmp_path / "cache", "--progress", "quiet", "-t", "a", ctx)
    assert (tmp_path / "cache" / "context-digests.json").exists()
    st = os.stat(ctx / "f")
    (ctx / "f").write_text("two\n")
    os.utime(ctx / "f", ns=(st.st_atime_ns, st.st_mtime_ns))  # only the ctime tells
    orca("--layout", out, "--cache-dir", tmp_path / "cache", "--progress", "quiet", "-t", "b", ctx)
    top = manifest_of(out, "b")["layers"][-1]
    member = [m for m in layer_members(out, top) if m.name == "f"][0]
    with tarfile.open(out / "blobs/sha256" / top["digest"].split(":")[1]) as tar:
        assert tar.extractfile("f").read() == b"two\n" and member.size == 4


MOUNT_OPTIONS = """
import os, sys
from orca import userns
assert userns.enter() is None
base = sys.argv[1]
for d in ("lower", "upper", "work", "merged", "ro"):
    os.mkdir(os.path.join(base, d))
userns.mount_overlay([base + "/lower"], base + "/upper", base + "/work", base + "/merged")
userns.mount_overlay([base + "/lower", base + "/upper"], None, None, base + "/ro")
with open("/proc/self/mountinfo") as f:
    for line in f:
        fields = line.split()
        if fields[4] in (base + "/merged", base + "/ro"):
            print(os.path.basename(fields[4]), fields[-1])
"""


def test_step_rootfs_are_mounted_volatile_so_their_umount_does_not_sync_the_disk(tmp_path):
    proc = subprocess.run([sys.executable, "-c", MOUNT_OPTIONS, str(tmp_path)], capture_output=True,
                          text=True, check=True)
    options = {}
    for line in proc.stdout.splitlines():
        name, opts = line.split(" ", 1)
        options[name] = set(opts.split(","))
    volatile = {"volatile", "fsync=volatile"}  # Linux 6.12+ shows it as fsync=volatile
    assert options["merged"] & volatile
    assert not options["ro"] & volatile  # nothing to sync without an upper


def test_a_run_bind_mount_of_the_context_is_keyed_through_the_kept_digests(busybox_layout, tmp_path):
    ctx, out = tmp_path / "ctx", tmp_path / "out"
    (ctx / "data").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(f"FROM oci:{busybox_layout}:latest\n"
                                    "RUN --mount=type=bind,source=data,target=/d cat /d/x > /copied\n")
    (ctx / "data" / "x").write_text("bound\n")
    orca("--layout", out, "--cache-dir", tmp_path / "cache", "--progress", "quiet", "-t", "a", ctx)
    kept = (tmp_path / "cache" / "context-digests.json").read_text()
    assert str(ctx / "data" / "x") in kept   # a rebuild reads it only if its stat changed
    top = manifest_of(out, "a")["layers"][-1]
    with tarfile.open(out / "blobs/sha256" / top["digest"].split(":")[1]) as tar:
        assert tar.extractfile("copied").read() == b"bound\n"


LINKS = """\
FROM oci:{base}:latest
RUN echo shared > /a && ln /a /b && ln /a /c && echo pair > /p && ln /p /q
RUN rm /a /q
RUN ln /p /r
"""


def test_removing_a_name_of_a_hard_linked_file_gives_the_same_layer_on_both_paths(busybox_layout, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(LINKS.format(base=busybox_layout))
    layers = {}
    for mode in ("auto", "copy"):
        out = tmp_path / f"out-{mode}"
        orca("--layout", out, "--cache-dir", tmp_path / f"cache-{mode}", "--progress", "quiet", "-t", "x", ctx,
             env={"ORCA_SNAPSHOTTER": mode, "SOURCE_DATE_EPOCH": "1700000000"})
        layers[mode] = manifest_of(out, "x")["layers"]
    assert [d["digest"] for d in layers["auto"]] == [d["digest"] for d in layers["copy"]]
    out = tmp_path / "out-auto"
    # the names left are no change of their own (overlay keeps them in the lower)...
    assert {m.name for m in layer_members(out, layers["auto"][2])} == {".", ".wh.a", ".wh.q"}
    # ...but a new name of a file carries the file with it
    last = {m.name: m for m in layer_members(out, layers["auto"][3])}
    assert set(last) == {".", "p", "r"} and last["r"].islnk() and last["r"].linkname == "p"
