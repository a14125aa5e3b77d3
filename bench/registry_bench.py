"""Pulling the Debian fixture from a loopback registry: orca-build pull vs skopeo copy.

    python bench/registry_bench.py [--fixture DIR] [--tag bookworm] [--rounds 3]

Starts docker-registry (plain HTTP on 127.0.0.1) seeded with the fixture,
then runs `orca-build pull` and `skopeo copy docker://... oci:...` back to
back into empty layouts, each as a fresh process, the first tool alternating
between rounds, and prints the median times, the ratio of the medians (target
<= 1.0x skopeo) and the range of the per-round ratios (load on the machine
made visible).  Exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from registry_server import Registry, skopeo  # noqa: E402

TARGET = 1.0


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixture", default=os.environ.get("ORCA_FIXTURES", "/var/cache/orca-fixtures") + "/debian")
    ap.add_argument("--tag", default="bookworm")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    reg = Registry(work / "registry")
    try:
        skopeo("copy", "-q", "--dest-tls-verify=false", f"oci:{args.fixture}:{args.tag}",
               f"docker://{reg.host}/bench/debian:{args.tag}")
        ref = f"{reg.host}/bench/debian:{args.tag}"
        ours_cmd = [sys.executable, "-c", "from orca.cli import main; main()", "pull",
                    "--insecure-registry", reg.host]
        commands = {
            "orca-build pull": lambda out: [*ours_cmd, "--layout", str(out), ref],
            "skopeo copy": lambda out: ["skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false",
                                        f"docker://{ref}", f"oci:{out}:{args.tag}"],
        }
        times = {name: [] for name in commands}
        for i in range(args.rounds):
            order = list(commands) if i % 2 == 0 else list(reversed(commands))
            for name in order:
                out = work / f"{name.split()[0]}-{i}"
                times[name].append(timed(commands[name](out)))
                shutil.rmtree(out)
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    ours = statistics.median(times["orca-build pull"])
    theirs = statistics.median(times["skopeo copy"])
    print(f"{'tool':<18} {'median s':>9}  rounds")
    for name, ts in times.items():
        print(f"{name:<18} {statistics.median(ts):>9.3f}  {' '.join(f'{t:.3f}' for t in ts)}")
    ratio = ours / theirs
    rounds = [a / b for a, b in zip(times["orca-build pull"], times["skopeo copy"])]
    print(f"ratio orca-build/skopeo: {ratio:.2f}x (target <= {TARGET:.1f}x); "
          f"per round {min(rounds):.2f}x .. {max(rounds):.2f}x")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
