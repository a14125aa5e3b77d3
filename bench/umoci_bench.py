"""umoci-py vs umoci 0.4.7 on the debian fixture, rootless (run as the test user).

    python bench/umoci_bench.py [--fixture DIR] [--tag bookworm] [--rounds 3]

Prints a table of wall-time ratios (targets: unpack <= 0.5x, repack after a
one-file change <= 0.25x) and umoci-py's peak RSS for unpack (<= 150 MB).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"unpack": 0.5, "repack (one file changed)": 0.25}
RSS_LIMIT_MB = 150


def _run(argv: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in KiB) of one command, measured by /usr/bin/time."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return elapsed, int(proc.stderr.strip().splitlines()[-1])


def _rm(path: Path) -> None:
    subprocess.run(["chmod", "-R", "u+rwx", str(path)], check=False)
    shutil.rmtree(path, ignore_errors=True)


def measure(tool: list[str], layout: Path, tag: str, work: Path) -> dict[str, tuple[float, int]]:
    bundle = work / "bundle"
    unpack = _run([*tool, "unpack", "--rootless", "--image", f"{layout}:{tag}", str(bundle)])
    (bundle / "rootfs/etc/bench-change").write_text("changed\n")
    repack = _run([*tool, "repack", "--image", f"{layout}:bench", str(bundle)])
    _rm(bundle)
    return {"unpack": unpack, "repack (one file changed)": repack}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", default=os.environ.get("ORCA_FIXTURES", "/var/cache/orca-fixtures")
                        + "/debian")
    parser.add_argument("--tag", default="bookworm")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tools = {"umoci-py": [sys.executable, "-m", "umoci_py.cli"], "umoci": ["umoci"]}
    best: dict[str, dict[str, tuple[float, int]]] = {name: {} for name in tools}
    with tempfile.TemporaryDirectory(prefix="umoci-bench-") as tmp:
        for round_ in range(args.rounds):
            for name, tool in tools.items():
                work = Path(tmp) / f"{name}-{round_}"
                layout = work / "layout"
                shutil.copytree(args.fixture, layout)
                for op, (secs, rss) in measure(tool, layout, args.tag, work).items():
                    old = best[name].get(op)
                    best[name][op] = (min(secs, old[0]) if old else secs, max(rss, old[1]) if old else rss)
                _rm(work)
    print(f"{'operation':28} {'umoci-py s':>10} {'umoci s':>8} {'ratio':>6} {'target':>6}  ok")
    for op, target in TARGETS.items():
        ours, theirs = best["umoci-py"][op][0], best["umoci"][op][0]
        ratio = ours / theirs
        print(f"{op:28} {ours:10.2f} {theirs:8.2f} {ratio:6.2f} {target:6.2f}  {'yes' if ratio <= target else 'NO'}")
    rss_mb = best["umoci-py"]["unpack"][1] / 1024
    print(f"{'peak RSS of unpack (MB)':28} {rss_mb:10.1f} {best['umoci']['unpack'][1] / 1024:8.1f}"
          f" {'':6} {RSS_LIMIT_MB:6d}  {'yes' if rss_mb <= RSS_LIMIT_MB else 'NO'}")


if __name__ == "__main__":
    main()
