"""apt-get install of 20 packages from a loopback archive: runrootless vs proot -0 vs the plain floor.

Run as an unprivileged user:  python bench/runrootless_bench.py [--work DIR] [--repeat N] [--no-pin]
(as root: tools/bench-runrootless).  The .debs are fetched once with the
host's apt (apt-get download) into WORK/debs and indexed with
dpkg-scanpackages; every run starts from a fresh copy of the same unpacked
bookworm bundle, and the three contenders run interleaved, N times each.

The floor is a plain user-namespace run (no ptrace) with
APT::Sandbox::User=root.  Its package set is chosen so that it succeeds
there too: no .deb ships files owned by anyone but root/root and no
maintainer script chowns to another id (cron does, it runs separately, under
runrootless only, as the correctness scenario).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runrootless import api  # noqa: E402
from runrootless.emulate import NAMES  # noqa: E402

FIXTURE = Path(os.environ.get("ORCA_FIXTURES", "/var/cache/orca-fixtures")) / "debian"
PACKAGES = ["less", "file", "bzip2", "xz-utils", "patch", "make", "netbase", "procps", "psmisc", "lsof",
            "tree", "jq", "vim-tiny", "nano", "unzip", "zip", "openssl", "ca-certificates", "curl", "wget"]
CORRECTNESS = ["cron"]
INSTALL = "apt-get update -qq && apt-get install -y -qq --no-install-recommends "


def fetch_debs(work: Path, base_rootfs: Path) -> Path:
    debs = work / "debs"
    wanted = " ".join(PACKAGES + CORRECTNESS)
    if (debs / "Packages").exists() and (debs / "wanted").read_text() == wanted:
        return debs
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir(parents=True)
    # What the base image lacks, resolved by the host's apt against the image's dpkg status.
    sim = subprocess.run(["apt-get", "-s", "-o", f"Dir::State::status={base_rootfs}/var/lib/dpkg/status",
                          "install", "--no-install-recommends", *PACKAGES, *CORRECTNESS],
                         check=True, capture_output=True, text=True).stdout
    names = [line.split()[1] for line in sim.splitlines() if line.startswith("Inst ")]
    subprocess.run(["apt-get", "download", *names], cwd=debs, check=True, capture_output=True)
    index = subprocess.run(["dpkg-scanpackages", "."], cwd=debs, check=True, capture_output=True).stdout
    (debs / "Packages").write_bytes(index)
    (debs / "wanted").write_text(wanted)
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


def fresh(base: Path, work: Path) -> Path:
    """A copy of the base bundle, written back to disk before the clock starts.

    Without the sync, writeback of the copy (and of the previous run's
    changes) lands inside the next timed run and swamps what is measured.
    """
    dest = work / "run"
    if dest.exists():
        shutil.rmtree(dest)
    subprocess.run(["cp", "-a", str(base), str(dest)], check=True)
    os.sync()
    return dest


class Bench:
    def __init__(self, work: Path, base: Path, pin: bool, notify: bool):
        self.work, self.base, self.pin, self.notify = work, base, pin, notify
        self.log: list[bytes] = []

    def runrootless(self, bundle: Path, script: str, stats: api.Stats, pin: bool | None = None,
                    prefilter: bool = True) -> int:
        spec = api.spec_from_bundle(bundle)
        spec.args = ["/bin/sh", "-c", script]
        return api.run(spec, output=self.log.append, pin_cpu=self.pin if pin is None else pin, notify=self.notify,
                       prefilter=prefilter, stats=stats)

    def floor(self, bundle: Path, script: str, pin: bool = False) -> int:
        spec = api.spec_from_bundle(bundle)
        spec.args = ["/bin/sh", "-c", script.replace("apt-get ", "apt-get -o APT::Sandbox::User=root ")]
        spec.emulate = False
        affinity = os.sched_getaffinity(0)
        if pin:   # as pin_cpu does for runrootless: this thread and all it forks on one CPU
            os.sched_setaffinity(0, {max(affinity)})
        try:
            return api.run(spec, output=self.log.append)
        finally:
            os.sched_setaffinity(0, affinity)

    def proot(self, bundle: Path, script: str) -> int:
        rootfs = bundle / "rootfs"
        return subprocess.run(["proot", "-0", "-r", str(rootfs), "-b", "/dev", "-b", "/proc", "-b", "/sys",
                               "-w", "/", "/bin/sh", "-c", script], capture_output=True).returncode


def cpu_seconds() -> float:
    """CPU time of this process (the tracer runs here) and its reaped children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(bench: Bench, fn, *args) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (less sensitive to other load on the host), exit status of fn(bundle, *args)."""
    args = (fresh(bench.base, bench.work), *args)
    start, cpu = time.monotonic(), cpu_seconds()
    status = fn(*args)
    return time.monotonic() - start, cpu_seconds() - cpu, status


def syscall_table(stats: api.Stats, runs: int) -> list[str]:
    lines = [f"    {'syscall':12s} {'ptrace':>8s} {'µs each':>8s} {'notified':>8s} {'in C':>8s}"
             "   (per run; µs: tracer time; in C: answered by the pre-filter)"]
    for nr in sorted(set(stats.by_nr) | set(stats.notified), key=lambda nr: -stats.by_nr[nr] - stats.notified[nr]):
        count = stats.by_nr[nr]
        each = f"{stats.ns_by_nr[nr] / count / 1000:8.1f}" if count else f"{'-':>8s}"
        lines.append(f"    {NAMES.get(nr, str(nr)):12s} {count // runs:8d} {each} {stats.notified[nr] // runs:8d} "
                     f"{stats.prefiltered[nr] // runs:8d}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache/runrootless-bench")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each contender (median reported)")
    parser.add_argument("--no-pin", action="store_true", help="let tracer and tracees use every CPU")
    parser.add_argument("--both-pins", action="store_true",
                        help="also run runrootless with the other pin_cpu setting, side by side")
    parser.add_argument("--no-notify", action="store_true",
                        help="every task traced and every emulated call a ptrace stop (api.run notify=False)")
    parser.add_argument("--no-prefilter-too", action="store_true",
                        help="also run runrootless with every notification answered in Python (prefilter=False)")
    parser.add_argument("--pinned-floor-too", action="store_true",
                        help="also run the floor on one CPU, as pin_cpu runs runrootless (what one CPU costs)")
    parser.add_argument("--only", choices=("runrootless", "floor", "proot"), action="append",
                        help="run only these contenders (repeatable)")
    opts = parser.parse_args()
    opts.work.mkdir(parents=True, exist_ok=True)
    (opts.work / "debs").mkdir(exist_ok=True)
    server, port = serve(opts.work / "debs")
    base = base_bundle(opts.work, port)
    fetch_debs(opts.work, base / "rootfs")
    bench = Bench(opts.work, base, pin=not opts.no_pin, notify=not opts.no_notify)
    script = INSTALL + " ".join(PACKAGES)
    stats = api.Stats()
    contenders = {"runrootless": lambda bundle: bench.runrootless(bundle, script, stats),
                  "floor (userns, Sandbox::User=root)": lambda bundle: bench.floor(bundle, script),
                  "proot -0": lambda bundle: bench.proot(bundle, script)}
    if opts.both_pins:
        other = api.Stats()
        contenders[f"runrootless, pin_cpu={not bench.pin}"] = lambda bundle: bench.runrootless(
            bundle, script, other, not bench.pin)
    if opts.no_prefilter_too:
        python_only = api.Stats()
        contenders["runrootless, no pre-filter"] = lambda bundle: bench.runrootless(
            bundle, script, python_only, prefilter=False)
    if opts.pinned_floor_too:
        contenders["floor, on one CPU"] = lambda bundle: bench.floor(bundle, script, pin=True)
    if opts.only:
        contenders = {k: v for k, v in contenders.items() if k.split()[0].rstrip(",") in opts.only}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    statuses: dict[str, set[int]] = {name: set() for name in contenders}
    for _ in range(opts.repeat):
        for name, fn in contenders.items():
            secs, cpu_secs, status = timed(bench, fn)
            times[name].append(secs)
            cpu[name].append(cpu_secs)
            statuses[name].add(status)
    cron_stats = api.Stats()
    cron_script = INSTALL + " ".join(CORRECTNESS) + " && stat -c %U:%G /var/spool/cron/crontabs /usr/bin/crontab"
    bench.log.clear()
    cron_secs, _, cron_status = timed(bench, bench.runrootless, cron_script, cron_stats)
    cron_out = b"".join(bench.log).decode(errors="replace").split()[-2:]
    server.shutdown()

    medians = {name: statistics.median(t) for name, t in times.items()}
    floor = medians.get("floor (userns, Sandbox::User=root)")
    proot = medians.get("proot -0")
    print(f"apt-get install of {len(PACKAGES)} packages (+deps) from a loopback archive; "
          f"median of {opts.repeat}, pin_cpu={bench.pin}, notify={bench.notify}")
    cpu_medians = {name: statistics.median(t) for name, t in cpu.items()}
    cpu_floor = cpu_medians.get("floor (userns, Sandbox::User=root)")
    floor_runs = times.get("floor (userns, Sandbox::User=root)")
    print(f"  {'':36s} {'wall s':>7s} {'/floor':>6s} {'/proot':>6s} {'cpu s':>6s} {'/floor':>6s}  exit  "
          f"{'/floor per round: median (range)':>32s}  wall runs")
    for name, secs in medians.items():
        runs = " ".join(f"{t:.1f}" for t in times[name])
        exits = ",".join(str(s) for s in sorted(statuses[name]))
        ratio_floor = f"{secs / floor:6.2f}" if floor else "     -"
        ratio_proot = f"{secs / proot:6.2f}" if proot else "     -"
        cpu_ratio = f"{cpu_medians[name] / cpu_floor:6.2f}" if cpu_floor else "     -"
        # Contenders run back to back in each round, so the per-round ratio cancels the drift
        # between rounds (the floor alone moves by up to 20%); its range shows the noise left.
        rounds = sorted(t / f for t, f in zip(times[name], floor_runs)) if floor_runs else []
        spread = f"{statistics.median(rounds):.2f} ({rounds[0]:.2f}-{rounds[-1]:.2f})" if rounds else "-"
        print(f"  {name:36s} {secs:7.2f} {ratio_floor} {ratio_proot} {cpu_medians[name]:6.1f} {cpu_ratio}  "
              f"{exits:4s}  {spread:>32s}  {runs}")
    if "runrootless" in medians:
        n = opts.repeat
        rr = sum(times["runrootless"])
        print(f"  runrootless per run: {stats.trapped // n} trapped syscalls (ptrace), {stats.stops // n} stops "
              f"({stats.exit_stops // n} exit stops, {stats.stepped // n} syscall entries of tasks followed call "
              f"by call), {stats.stops / rr:.0f} stops/s, "
              f"tracer busy {sum(stats.ns_by_nr.values()) / 1e9 / n:.2f} s; "
              f"{sum(stats.notified.values()) // n} answered by the notification listener "
              f"({sum(stats.notified.values()) / rr:.0f}/s), {sum(stats.prefiltered.values()) // n} of them "
              f"by its C pre-filter")
        print("\n".join(syscall_table(stats, n)))
    print(f"correctness: apt-get install cron under runrootless: {cron_secs:.1f} s, exit {cron_status}, "
          f"owners {' '.join(cron_out)}, {cron_stats.trapped} trapped, {cron_stats.stops} stops, "
          f"{sum(cron_stats.notified.values())} notified")


if __name__ == "__main__":
    main()
