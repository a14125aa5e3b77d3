"""Processes started at the same instant (a pipe closed as the starting gun,
no sleeps): repacks, tags, configs and gc into one layout lose no tag and
corrupt nothing; gc beside writers deletes none of their blobs; two
orca-builds sharing a cache directory both succeed."""

from __future__ import annotations

import os
import subprocess
import sys

from umoci_py_helpers import check_layout, umoci_py, validate_layout

# Blocks on the pipe until every process is spawned and the write end closes.
_GATED = "import os, sys; os.read(int(sys.argv[1]), 1); sys.argv[1:2] = []; "
UMOCI_PY = _GATED + "from umoci_py.cli import main; main(sys.argv[1:])"
ORCA = _GATED + "sys.argv[0] = 'orca-build'; from orca.cli import main; main()"


def run_together(commands: list[list]) -> list[subprocess.CompletedProcess]:
    read, write = os.pipe()
    procs = [subprocess.Popen([sys.executable, "-c", code, str(read), *map(str, args)], pass_fds=(read,),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for code, args in commands]
    os.close(read)
    os.close(write)
    results = []
    for proc in procs:
        out, err = proc.communicate()
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def test_repack_tag_config_and_gc_at_once_lose_nothing(busybox_layout, tmp_path):
    layout = busybox_layout
    image = f"{layout}:latest"
    writers = 3
    for i in range(writers):
        umoci_py("unpack", "--rootless", "--image", image, tmp_path / f"b{i}")
    for rnd in range(3):
        commands = []
        for i in range(writers):
            (tmp_path / f"b{i}/rootfs/etc/round").write_text(f"{rnd} {i}\n" * 10000)
            commands.append((UMOCI_PY, ["repack", "--image", f"{layout}:r{rnd}-{i}", tmp_path / f"b{i}"]))
            commands.append((UMOCI_PY, ["tag", "--image", image, f"t{rnd}-{i}"]))
            commands.append((UMOCI_PY, ["config", "--image", image, "--tag", f"c{rnd}-{i}",
                                        "--config.env", f"R={rnd}-{i}"]))
        commands.append((UMOCI_PY, ["gc", "--layout", layout]))
        for proc in run_together(commands):
            assert proc.returncode == 0, (proc.args, proc.stderr)
        tags = set(check_layout(layout))  # every blob of every tag is still there and verifies
        assert {f"{kind}{r}-{i}" for kind in "rtc" for r in range(rnd + 1) for i in range(writers)} <= tags
    for i in range(writers):
        assert umoci_py("stat", "--image", f"{layout}:r2-{i}").returncode == 0
    validate_layout(layout, tmp_path)


def test_gc_loop_beside_inserts_deletes_none_of_their_blobs(busybox_layout, tmp_path):
    layout = busybox_layout
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(1 << 20))
    commands = [(UMOCI_PY, ["insert", "--rootless", "--image", f"{layout}:latest", "--tag", f"i{i}", src,
                            f"/opt/{i}"]) for i in range(4)]
    commands += [(UMOCI_PY, ["gc", "--layout", layout]) for _ in range(4)]
    for proc in run_together(commands):
        assert proc.returncode == 0, (proc.args, proc.stderr)
    assert {f"i{i}" for i in range(4)} <= set(check_layout(layout))


def test_two_builds_sharing_a_cache_dir_both_succeed(busybox_layout, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("shared\n")
    (ctx / "Dockerfile").write_text(f"FROM oci:{busybox_layout}:latest\nCOPY f /f\n"
                                    "RUN cat /f /f > /g\nCOPY Dockerfile /d\n")
    common = ["--cache-dir", tmp_path / "cache", "--progress", "plain", "--build-arg", "SOURCE_DATE_EPOCH=1"]
    results = run_together([(ORCA, ["--layout", tmp_path / f"out{i}", *common, "-t", "app", ctx])
                            for i in range(2)])
    for proc in results:
        assert proc.returncode == 0, proc.stderr
    digests = set()
    for i in range(2):
        check_layout(tmp_path / f"out{i}")
        digests.add((tmp_path / f"out{i}/index.json").read_text())
    assert len(digests) == 1  # the same image, whoever won each cache race
    again = subprocess.run([sys.executable, "-c", "from orca.cli import main; main()", "--layout",
                            tmp_path / "out0", *map(str, common), "-t", "app", ctx],
                           capture_output=True, text=True)
    assert again.returncode == 0 and "CACHED" in again.stdout + again.stderr, again.stderr
