"""orca-build (as a user without subuid) beside `buildah bud --isolation chroot
--layers` (as a user with a subuid range, which buildah needs), on the same
Dockerfiles FROM the same Debian image.  Run as root through tools/bench-build.

Cases: examples/apt-hello first build and rebuild with no change; examples/ex01
build #1 and build #2 after a context file changed (buildbench's procedure).
Targets (issue 4): apt first build <= 1.0x buildah, no-change rebuild <= 0.5 s.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def as_user(user: str, argv: list, env: dict | None = None) -> tuple[float, str]:
    """Run argv as user; (wall time, stdout).  Fails loudly with its output."""
    home = subprocess.run(["getent", "passwd", user], capture_output=True, text=True,
                          check=True).stdout.split(":")[5]
    # PYTHONPATH: the tree this bench file is in, not what the venv was installed from
    base = {"HOME": home, "PATH": f"{os.environ['ORCA_VENV']}/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": str(REPO)}
    cmd = ["runuser", "-u", user, "--", "env", *(f"{k}={v}" for k, v in {**base, **(env or {})}.items()),
           *map(str, argv)]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd="/tmp", stdin=subprocess.DEVNULL, capture_output=True, text=True)
    took = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, argv))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return took, proc.stdout


def give(path: Path, user: str) -> None:
    subprocess.run(["chown", "-R", f"{user}:{user}", str(path)], check=True)


class Orca:
    name = "orca-build"

    def __init__(self, work: Path, user: str, fixture: Path):
        self.user, self.work = user, work / "orca"
        self.work.mkdir()
        shutil.copytree(fixture, self.work / "layout")
        give(self.work, user)

    def build(self, ctx: Path) -> float:
        return as_user(self.user, ["orca-build", "--layout", self.work / "layout", "--cache-dir",
                                   self.work / "cache", "--progress", "quiet", ctx])[0]


class Buildah:
    name = "buildah"

    def __init__(self, work: Path, user: str, fixture: Path):
        self.user, self.work = user, work / "buildah"
        self.work.mkdir()
        give(self.work, user)
        self.storage = ["--root", self.work / "storage", "--runroot", self.work / "run"]
        image_id = as_user(self.user, ["buildah", *self.storage, "pull", "-q", f"oci:{fixture}:bookworm"])[1]
        as_user(self.user, ["buildah", *self.storage, "tag", image_id.strip(), "bookworm:latest"])

    def build(self, ctx: Path) -> float:
        return as_user(self.user, ["buildah", *self.storage, "bud", "--isolation", "chroot", "--layers",
                                   "-q", "-t", "bench", ctx], env={"BUILDAH_ISOLATION": "chroot"})[0]


def run_case(tool, work: Path, example: str, touch: bool) -> tuple[float, float]:
    ctx = work / f"{tool.name}-{example}"
    shutil.copytree(EXAMPLES / example, ctx)
    give(ctx, tool.user)
    first = tool.build(ctx)
    if touch:
        (ctx / "buildbench-dummy").write_text(time.ctime() + "\n")
        give(ctx, tool.user)
    return first, tool.build(ctx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orca-user", default="orcatest")
    ap.add_argument("--buildah-user", default="orcasub")
    ap.add_argument("--fixture", type=Path, default=Path(os.environ.get("ORCA_FIXTURES",
                                                                         "/var/cache/orca-fixtures")) / "debian")
    args = ap.parse_args()
    rows = []
    for example, touch in (("apt-hello", False), ("ex01", True)):
        times = {}
        for cls, user in ((Orca, args.orca_user), (Buildah, args.buildah_user)):
            work = Path(tempfile.mkdtemp(prefix="build-bench-"))
            os.chmod(work, 0o755)
            try:
                tool = cls(work, user, args.fixture)
                times[cls.name] = run_case(tool, work, example, touch)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        second = "build #2 (context touched)" if touch else "rebuild, no change"
        for i, label in enumerate(("build #1", second)):
            o, b = times["orca-build"][i], times["buildah"][i]
            rows.append((example, label, o, b))
    print("| Dockerfile | build | orca-build (s) | buildah --layers (s) | orca / buildah |")
    print("|---|---|---:|---:|---:|")
    for example, label, o, b in rows:
        print(f"| {example} | {label} | {o:.2f} | {b:.2f} | {o / b:.2f}x |")
    apt_first, apt_again = rows[0][2] / rows[0][3], rows[1][2]
    print(f"\ntargets: apt first build <= 1.0x buildah: {apt_first:.2f}x "
          f"({'met' if apt_first <= 1.0 else 'MISSED'}); no-change rebuild <= 0.5 s: {apt_again:.2f} s "
          f"({'met' if apt_again <= 0.5 else 'MISSED'})")


if __name__ == "__main__":
    main()
