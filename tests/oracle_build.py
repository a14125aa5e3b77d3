"""The oracle suite's side of the comparison: build a package set with
orca-build as the test user, read the image's manifest from its layers, and
list how it differs from the root-built oracle (tools/make-oracles); run a
script in an image under runrootless."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from fixtures_dir import FIXTURES
from oracle_manifest import SETS, manifest_of_layers

from umoci_py import compress, refs
from umoci_py.cas import Layout

BIN = Path(sys.executable).parent

# Paths whose presence or metadata legitimately differ between two installs
# of the same packages, however made.  The oracle keeps what mmdebstrap's
# cleanup would remove (logs, /run, /tmp, apt lists and caches: see
# tools/make-oracles), so they are compared too; only these are left out:
EXCLUDED = [
    # The logs the debian fixture's mmdebstrap deleted (its cleanup/reproducible)
    # but the oracle's keeps: the oracle's hold its base install's lines too.
    r"/var/log/(dpkg|alternatives)\.log",
    r"/var/log/apt/(history\.log|term\.log|eipp\.log\.xz)",
    # apt's package lists: the oracle's come from mmdebstrap's own apt
    # configuration (no translations, no sandbox user), ours from the
    # Dockerfile's apt-get update.
    r"/var/lib/apt/lists/.*",
    # In a RUN step /etc/hosts is the runtime's own, mounted (as Docker,
    # BuildKit and buildah do), so netbase's postinst finds one and writes
    # none: the image has no /etc/hosts, root's chroot install has netbase's.
    # Every runtime mounts its own at run time.
    r"/etc/hosts",
    # ssl-cert's snakeoil certificate is made afresh by each install; its
    # hash link in /etc/ssl/certs is named after it.
    r"/etc/ssl/certs/[0-9a-f]{8}\.[0-9]+",
]
_EXCLUDED = re.compile("|".join(f"(?:{p})" for p in EXCLUDED))
FIELDS = ("type", "mode", "uid", "gid", "user", "group", "link", "caps")


def oracle(name: str) -> dict:
    path = FIXTURES / f"oracle-{name}.json"
    if not path.is_file():
        raise AssertionError(f"oracle {path} missing: run tools/make-oracles (tools/setup-host) as root")
    return json.loads(path.read_text())


def build_set(name: str, work: Path) -> Path:
    """Build package set `name` FROM the debian fixture into work/out, tag `name`."""
    out = work / "out"
    if not out.exists():
        shutil.copytree(FIXTURES / "debian", out)
        for path in out.rglob("*"):
            path.chmod(path.stat().st_mode | 0o200)
    ctx = work / f"ctx-{name}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM bookworm\n"
        "RUN apt-get update && DEBIAN_FRONTEND=noninteractive"
        f" apt-get install -y --no-install-recommends {' '.join(SETS[name])}\n")
    proc = subprocess.run([BIN / "orca-build", "build", "--progress", "plain",
                           "--layout", out, "--cache-dir", work / "cache", "-t", name, ctx],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return out


def image_manifest(layout: Path, tag: str) -> dict:
    store = Layout(layout)
    manifest = store.read_json(refs.resolve(store, tag)[-1], "manifest")
    streams = []
    try:
        for desc in manifest["layers"]:
            streams.append(compress.reader(store.open_blob(desc["digest"], desc["size"]), desc["mediaType"]))
        return manifest_of_layers(streams)
    finally:
        for stream in streams:
            stream.close()


def run_in_image(layout: Path, tag: str, script: str, work: Path) -> subprocess.CompletedProcess:
    """sh -c script in the image, unpacked rootless by umoci-py and run by runrootless."""
    bundle = work / "bundle"
    unpack = subprocess.run([BIN / "umoci-py", "unpack", "--rootless", "--image", f"{layout}:{tag}", bundle],
                            capture_output=True, text=True)
    assert unpack.returncode == 0, unpack.stderr
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sh", "-c", script]
    (bundle / "config.json").write_text(json.dumps(config))
    return subprocess.run([BIN / "runrootless", "run", "-b", bundle, f"oracle-{tag}"], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=300)


def differences(ours: dict, theirs: dict) -> list[str]:
    """One line per difference: packages, then paths (missing, extra, by field)."""
    out = []
    for pkg in sorted(set(ours["packages"]) | set(theirs["packages"])):
        a, b = ours["packages"].get(pkg), theirs["packages"].get(pkg)
        if a != b:
            out.append(f"package {pkg}: ours {a or 'not installed'}, root's {b or 'not installed'}")
    mine = {p: e for p, e in ours["paths"].items() if not _EXCLUDED.fullmatch(p)}
    root = {p: e for p, e in theirs["paths"].items() if not _EXCLUDED.fullmatch(p)}
    for path in sorted(set(mine) | set(root)):
        a, b = mine.get(path), root.get(path)
        if a is None:
            out.append(f"{path}: only in root's image ({_brief(b)})")
        elif b is None:
            out.append(f"{path}: only in ours ({_brief(a)})")
        else:
            diff = [f"{f} ours {a[f]!r} root's {b[f]!r}" for f in FIELDS if a[f] != b[f]]
            if diff:
                out.append(f"{path}: " + ", ".join(diff))
    return out


def _brief(entry: dict) -> str:
    return f"{entry['type']} {entry['mode']} {entry['user']}:{entry['group']}"
