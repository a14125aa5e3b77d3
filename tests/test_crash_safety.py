"""kill -9 at seeded random moments of umoci-py repack, config, tag, gc,
insert and unpack, and of an orca-build: every layout stays valid (each tag
resolves, every blob it reaches verifies, oci-image-tool accepts each tag),
the next run succeeds, and a killed unpack never leaves a bundle that looks
complete (complete = umoci.json present: unpack writes it last)."""

from __future__ import annotations

import random
import subprocess
import time

from orca_build_helpers import ORCA
from umoci_py.bundle import UMOCI_JSON
from umoci_py_helpers import UMOCI_PY, assert_one_line_error, check_layout, umoci_py, validate_layout

KILLS_PER_OP = 7


def timed(cmd) -> float:
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return time.monotonic() - start


def kill_at(cmd, delay: float) -> float | None:
    """Run cmd, SIGKILL it after delay seconds: None if the kill landed, else how long the run took."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if proc.returncode == -9:
        return None
    assert proc.returncode == 0, err   # a run the kill missed succeeds like any other
    return time.monotonic() - start


def hammer(rng, make_cmd, after_kill, kills_wanted: int = KILLS_PER_OP) -> int:
    """Kill make_cmd(i) at random points of its run time until kills_wanted kills landed.

    The kill comes within 0.9 x the fastest run seen so far.  One measured
    run is no bound on the next (the host's load changes; the first insert
    or gc has more to do than the next), so a run that ends before its kill
    narrows the window to what that run took: each miss shrinks it by a
    tenth at least, and a kill within the interpreter's start-up cannot
    miss, so the kills land however the load changes.
    """
    fastest = timed(make_cmd(0))
    kills = attempts = 0
    while kills < kills_wanted:
        attempts += 1
        assert attempts <= 10 * kills_wanted, f"only {kills} of {attempts} kills landed (fastest run {fastest:.3f}s)"
        took = kill_at(make_cmd(attempts), rng.uniform(0.02, fastest * 0.9))
        if took is None:
            kills += 1
        else:
            fastest = min(fastest, took)
        after_kill(attempts)
    return kills


def test_kill_9_during_layout_writes(busybox_layout, tmp_path):
    rng = random.Random(6)
    layout = busybox_layout
    image = f"{layout}:latest"
    umoci_py("unpack", "--rootless", "--image", image, tmp_path / "b")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub/file").write_bytes(bytes(range(256)) * 4000)

    def repack(i):
        (tmp_path / f"b/rootfs/etc/crash-{i}").write_bytes(b"%d" % i * 100000)
        return [*UMOCI_PY, "repack", "--image", f"{layout}:r{i}", tmp_path / "b"]

    ops = {
        "repack": repack,
        "config": lambda i: [*UMOCI_PY, "config", "--image", image, "--tag", f"c{i}", "--config.env", f"X={i}"],
        "tag": lambda i: [*UMOCI_PY, "tag", "--image", image, f"t{i}"],
        "insert": lambda i: [*UMOCI_PY, "insert", "--rootless", "--image", image, "--tag", f"i{i}", src,
                             f"/opt/{i}"],
        "gc": lambda i: [*UMOCI_PY, "gc", "--layout", layout],
    }
    total = 0
    for name, make_cmd in ops.items():
        if name == "gc":  # give gc something to delete each time
            def before_gc(i):
                for tag in check_layout(layout):
                    if tag != "latest" and not tag.endswith("100") and rng.random() < 0.3:
                        umoci_py("remove", "--image", f"{layout}:{tag}")
            before_gc(0)
            total += hammer(rng, make_cmd, lambda i: (check_layout(layout), before_gc(i)))
        else:
            total += hammer(rng, make_cmd, lambda i: check_layout(layout))
        assert subprocess.run(make_cmd(100), capture_output=True).returncode == 0  # the next run succeeds
        check_layout(layout)
    umoci_py("gc", "--layout", layout)
    tags = check_layout(layout)
    assert {"latest", "r100", "c100", "t100", "i100"} <= set(tags)
    validate_layout(layout, tmp_path)
    print(f"kill -9 survived by layout writes: {total}")


def test_killed_unpack_never_looks_complete(busybox_layout, tmp_path):
    rng = random.Random(66)
    image = f"{busybox_layout}:latest"

    def unpack(i):
        return [*UMOCI_PY, "unpack", "--rootless", "--image", image, tmp_path / f"b{i}"]

    def after_kill(i):
        bundle = tmp_path / f"b{i}"
        if (bundle / UMOCI_JSON).exists():  # finished before the kill: a whole bundle
            assert (bundle / "config.json").is_file() and list(bundle.glob("sha256_*.mtree"))
            umoci_py("repack", "--image", f"{busybox_layout}:again{i}", bundle)
        elif bundle.exists():
            proc = umoci_py("repack", "--image", f"{busybox_layout}:again{i}", bundle, check=False)
            assert_one_line_error(proc, UMOCI_JSON)
            leftovers = (bundle / "rootfs").exists() or (bundle / "config.json").exists()
            proc = umoci_py("unpack", "--rootless", "--image", image, bundle, check=False)
            if leftovers:
                assert proc.returncode == 1  # refuses to unpack over the leftovers
            else:  # killed right after mkdir: an empty directory is a valid target, as for umoci
                assert proc.returncode == 0 and (bundle / UMOCI_JSON).is_file()

    kills = hammer(rng, unpack, after_kill)
    umoci_py("unpack", "--rootless", "--image", image, tmp_path / "final")
    print(f"kill -9 survived by unpack: {kills}")


BUILD = """\
FROM oci:{base}:latest
COPY data /data
RUN cat /data/a /data/a > /data/b && echo built > /built
COPY more /more
"""


def test_kill_9_during_orca_build(busybox_layout, tmp_path):
    rng = random.Random(666)
    ctx = tmp_path / "ctx"
    (ctx / "data").mkdir(parents=True)
    (ctx / "more").write_text("more\n")
    (ctx / "Dockerfile").write_text(BUILD.format(base=busybox_layout))

    def build(i):
        (ctx / "data/a").write_bytes(b"%d\n" % i * 50000)  # a new context: nothing cached
        return [*ORCA, "--layout", tmp_path / "out", "--cache-dir", tmp_path / "cache", "--progress", "quiet",
                "-t", f"b{i}", ctx]

    def after_kill(i):
        if (tmp_path / "out").exists():
            check_layout(tmp_path / "out")

    # The base is extracted into the snapshot store once: the builds to kill are the ones after
    timed(build(-1))
    kills = hammer(rng, build, after_kill, kills_wanted=8)
    for i in (100, 100):  # a fresh build, then the same one from the cache
        proc = subprocess.run(build(i), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    assert "b100" in check_layout(tmp_path / "out")
    validate_layout(tmp_path / "out", tmp_path)
    print(f"kill -9 survived by orca-build: {kills}")
