"""apt-get install of ~20 packages from a loopback archive: runrootless vs proot -0 vs no emulation.

Run as an unprivileged user:  python bench/runrootless_bench.py [--work DIR] [--no-pin]
The .debs are fetched once with the host's apt (apt-get download) into
WORK/debs and indexed with dpkg-scanpackages; every run starts from a fresh
copy of the same unpacked bookworm bundle.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runrootless import api  # noqa: E402

FIXTURE = Path(os.environ.get("ORCA_FIXTURES", "/var/cache/orca-fixtures")) / "debian"
PACKAGES = ["cron", "less", "file", "bzip2", "xz-utils", "patch", "make", "netbase", "procps", "psmisc",
            "lsof", "tree", "jq", "vim-tiny", "nano", "unzip", "zip", "openssl", "ca-certificates", "curl"]


def fetch_debs(work: Path, base_rootfs: Path) -> Path:
    debs = work / "debs"
    if (debs / "Packages").exists():
        return debs
    debs.mkdir(parents=True, exist_ok=True)
    # What the base image lacks, resolved by the host's apt against the image's dpkg status.
    sim = subprocess.run(["apt-get", "-s", "-o", f"Dir::State::status={base_rootfs}/var/lib/dpkg/status",
                          "install", "--no-install-recommends", *PACKAGES],
                         check=True, capture_output=True, text=True).stdout
    names = [line.split()[1] for line in sim.splitlines() if line.startswith("Inst ")]
    subprocess.run(["apt-get", "download", *names], cwd=debs, check=True, capture_output=True)
    index = subprocess.run(["dpkg-scanpackages", "."], cwd=debs, check=True, capture_output=True).stdout
    (debs / "Packages").write_bytes(index)
    return debs


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def base_bundle(work: Path, port: int) -> Path:
    bundle = work / "base"
    if not bundle.exists():
        subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{FIXTURE}:bookworm", str(bundle)],
                       check=True, capture_output=True)
    apt = bundle / "rootfs/etc/apt"
    for old in (apt / "sources.list.d").glob("*"):
        old.unlink()
    (apt / "sources.list").write_text(f"deb [trusted=yes] http://127.0.0.1:{port}/ ./\n")
    return bundle


def fresh(base: Path, work: Path, name: str) -> Path:
    dest = work / name
    if dest.exists():
        shutil.rmtree(dest)
    subprocess.run(["cp", "-a", str(base), str(dest)], check=True)
    return dest


def timed(fn) -> tuple[float, int]:
    start = time.monotonic()
    status = fn()
    return time.monotonic() - start, status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache/runrootless-bench")
    parser.add_argument("--no-pin", action="store_true", help="let tracer and tracees use every CPU")
    opts = parser.parse_args()
    opts.work.mkdir(parents=True, exist_ok=True)
    server, port = serve(opts.work / "debs")
    base = base_bundle(opts.work, port)
    fetch_debs(opts.work, base / "rootfs")
    script = "apt-get update -qq && apt-get install -y -qq --no-install-recommends " + " ".join(PACKAGES)
    log = []

    def run_spec(emulate: bool, extra: str = "", stats=None) -> int:
        bundle = fresh(base, opts.work, "run")
        spec = api.spec_from_bundle(bundle)
        spec.args = ["/bin/sh", "-c", script.replace("apt-get ", f"apt-get {extra} ")]
        spec.emulate = emulate
        return api.run(spec, output=log.append, pin_cpu=not opts.no_pin, stats=stats)

    def run_proot() -> int:
        rootfs = fresh(base, opts.work, "run") / "rootfs"
        return subprocess.run(["proot", "-0", "-r", str(rootfs), "-b", "/dev", "-b", "/proc", "-b", "/sys",
                               "-w", "/", "/bin/sh", "-c", script], capture_output=True).returncode

    stats = api.Stats()
    results = {
        "runrootless": timed(lambda: run_spec(True, stats=stats)),
        "no emulation (Sandbox::User=root)": timed(lambda: run_spec(False, "-o APT::Sandbox::User=root")),
        "proot -0": timed(run_proot),
    }
    server.shutdown()
    ref = results["runrootless"][0]
    print(f"apt-get install of {len(PACKAGES)} packages (+deps) from a loopback archive, pin_cpu={not opts.no_pin}")
    for name, (secs, status) in results.items():
        print(f"  {name:36s} {secs:7.2f} s  exit {status:3d}  ratio to runrootless {secs / ref:5.2f}")
    print(f"  runrootless: {stats.trapped} trapped syscalls, {stats.stops} stops, "
          f"{stats.stops / ref:.0f} stops/s")


if __name__ == "__main__":
    main()
