"""umoci-py vs umoci 0.4.7, rootless, side by side in one run (as an unprivileged user).

    python bench/umoci_bench.py [--rounds 5] [--work DIR] [--images busybox,debian,debian-big]
    sudo tools/bench-umoci [same arguments]     (builds the fixtures, runs this as orcatest)

For every fixture image both CLIs unpack it `--rootless`, alternating which
goes first, `--rounds` times; on the debian image each then repacks its own
bundle after one file changed.  Times are wall-clock medians, peak RSS
comes from /usr/bin/time -f %M.  One untimed unpack per tool and image comes
first, so the layout blobs are in the page cache for both.  No tree is
removed before the end: deleting inodes makes the next creations slower on
a journal-less ext4 (it skips recently freed inodes) and would penalise
whichever tool runs next.  Prints markdown tables (issue 2 targets: unpack
<= 0.5x umoci, repack after a one-file change <= 0.25x, unpack RSS <= 150 MB).
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import gzip_choice

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("ORCA_FIXTURES", "/var/cache/orca-fixtures"))
TAGS = {"busybox": "latest", "debian": "bookworm", "debian-big": "bookworm"}
REPACK_IMAGE = "debian"
UNPACK_TARGET, REPACK_TARGET, RSS_LIMIT_MB = 0.5, 0.25, 150


def tools() -> dict[str, list[str]]:
    return {"umoci-py": [sys.executable, "-m", "umoci_py.cli"], "umoci": ["umoci"]}


def _env() -> dict[str, str]:
    # The CLI under test is this checkout, whatever the venv has installed.
    return {**os.environ, "PYTHONPATH": str(REPO)}


def run(argv: list[str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS in MB, user+system CPU seconds) of one command."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", *argv], capture_output=True, text=True, env=_env())
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    rss, user, system = proc.stderr.strip().splitlines()[-1].split()
    return elapsed, int(rss) / 1024, float(user) + float(system)


class _Counting:
    def __init__(self, stream):
        self.stream, self.size = stream, 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.size += len(data)
        return data


def layer_stats(layout: Path, tag: str) -> tuple[int, int]:
    """(tar entries, uncompressed bytes) of the image's single layer."""
    with gzip.open(gzip_choice.first_layer(str(layout), tag)) as blob:
        counting = _Counting(blob)
        with tarfile.open(fileobj=counting, mode="r|") as tar:
            entries = sum(1 for _ in tar)
        while counting.read(1 << 20):
            pass
    return entries, counting.size


class Bench:
    def __init__(self, work: Path, rounds: int):
        self.work = work
        self.rounds = rounds
        self.serial = 0

    def fresh(self, name: str) -> Path:
        self.serial += 1
        path = self.work / f"{self.serial:03d}-{name}"
        path.mkdir()
        return path

    def unpack(self, tool: list[str], image: str, name: str) -> tuple[Path, tuple[float, float, float]]:
        bundle = self.fresh(name) / "bundle"
        return bundle, run([*tool, "unpack", "--rootless", "--image", f"{FIXTURES / image}:{TAGS[image]}",
                            str(bundle)])

    def repack(self, tool: list[str], bundle: Path, name: str) -> tuple[float, float, float]:
        layout = self.fresh(name) / "layout"
        shutil.copytree(FIXTURES / REPACK_IMAGE, layout)
        (bundle / "rootfs/etc/bench-change").write_text("changed\n")
        return run([*tool, "repack", "--image", f"{layout}:bench", str(bundle)])

    def image(self, image: str) -> dict[str, dict[str, list[tuple[float, float, float]]]]:
        """{tool: {"unpack"|"repack": [(secs, rss)...]}} over the rounds."""
        results: dict[str, dict[str, list]] = {name: {"unpack": [], "repack": []} for name in tools()}
        for name, tool in tools().items():
            self.unpack(tool, image, name)  # warm-up: page cache, imports
        order = list(tools().items())
        for round_ in range(self.rounds):
            for name, tool in order if round_ % 2 == 0 else order[::-1]:
                bundle, measured = self.unpack(tool, image, name)
                results[name]["unpack"].append(measured)
                if image == REPACK_IMAGE:
                    results[name]["repack"].append(self.repack(tool, bundle, name))
        return results


def median(samples: list[tuple[float, float, float]], index: int) -> float:
    return statistics.median(s[index] for s in samples)


def _ok(good: bool) -> str:
    return "yes" if good else "**no**"


def report(per_image: dict, stats: dict, rounds: int) -> str:
    lines = [f"Rootless, as an unprivileged user, page cache warm, median of {rounds} alternating runs"
             " (CPU = user + system time of the process, all threads).", "",
             "| image | entries | tar MB | umoci-py unpack s | umoci unpack s | ratio | umoci-py MB/s"
             " | umoci-py files/s | umoci MB/s | umoci-py CPU s | umoci CPU s | umoci-py max RSS MB"
             " | umoci max RSS MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for image, res in per_image.items():
        entries, size = stats[image]
        ours, theirs = median(res["umoci-py"]["unpack"], 0), median(res["umoci"]["unpack"], 0)
        lines.append(f"| {image} | {entries} | {size / 1e6:.0f} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f}"
                     f" | {size / 1e6 / ours:.0f} | {entries / ours:.0f} | {size / 1e6 / theirs:.0f}"
                     f" | {median(res['umoci-py']['unpack'], 2):.2f} | {median(res['umoci']['unpack'], 2):.2f}"
                     f" | {max(s[1] for s in res['umoci-py']['unpack']):.0f}"
                     f" | {max(s[1] for s in res['umoci']['unpack']):.0f} |")
    if REPACK_IMAGE in per_image:
        lines += ["", "| issue 2 target (debian fixture) | umoci-py | umoci | measured | per-round range | target"
                  " | met |", "|---|---:|---:|---:|---:|---:|---|"]
        res = per_image[REPACK_IMAGE]
        for op, target in (("unpack", UNPACK_TARGET), ("repack", REPACK_TARGET)):
            ours, theirs = median(res["umoci-py"][op], 0), median(res["umoci"][op], 0)
            label = "unpack time" if op == "unpack" else "repack time, one file changed"
            # Both tools ran back to back in each round, so per-round ratios show the noise.
            ratios = [a[0] / b[0] for a, b in zip(res["umoci-py"][op], res["umoci"][op])]
            lines.append(f"| {label} | {ours:.2f} s | {theirs:.2f} s | {ours / theirs:.2f}x"
                         f" | {min(ratios):.2f}-{max(ratios):.2f}x | <= {target}x | {_ok(ours / theirs <= target)} |")
        rss = max(s[1] for s in res["umoci-py"]["unpack"])
        lines.append(f"| unpack peak RSS | {rss:.0f} MB | {max(s[1] for s in res['umoci']['unpack']):.0f} MB"
                     f" | {rss:.0f} MB | | <= {RSS_LIMIT_MB} MB | {_ok(rss <= RSS_LIMIT_MB)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", default="busybox,debian,debian-big")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a new one in /var/tmp)")
    parser.add_argument("--no-gzip", action="store_true", help="skip the gzip backend table")
    args = parser.parse_args()
    images = [i for i in args.images.split(",") if i]
    unknown = [i for i in images if i not in TAGS]
    if unknown:
        sys.exit(f"--images: unknown {', '.join(unknown)} (choose from {', '.join(TAGS)})")
    missing = [i for i in images if not (FIXTURES / i / "index.json").exists()]
    if missing:
        sys.exit(f"{FIXTURES}: missing fixture(s) {', '.join(missing)}: run tools/make-fixtures --big as root")
    work = Path(tempfile.mkdtemp(prefix="umoci-bench-", dir=args.work or "/var/tmp"))
    try:
        bench = Bench(work, args.rounds)
        per_image, stats = {}, {}
        for image in images:
            stats[image] = layer_stats(FIXTURES / image, TAGS[image])
            per_image[image] = bench.image(image)
            print(f"{image}: done", file=sys.stderr)
        print(report(per_image, stats, args.rounds))
        if not args.no_gzip:
            print()
            print(gzip_choice.markdown(*gzip_choice.measure(
                gzip_choice.first_layer(str(FIXTURES / "debian"), TAGS["debian"]))))
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
