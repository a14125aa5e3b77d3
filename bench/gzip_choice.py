"""The gzip backends umoci_py.compress chooses between, measured on a layer.

    python bench/gzip_choice.py [LAYOUT [TAG]]      (default: the debian fixture)

Also imported by umoci_bench.py, which folds the table into its report.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import zlib

CANDIDATES = (("zlib", "zlib", 6), ("zlib-ng", "zlib_ng.zlib_ng", 6), ("zlib-ng", "zlib_ng.zlib_ng", 1),
              ("isal", "isal.isal_zlib", 3), ("isal", "isal.isal_zlib", 1))
CHUNK = 1 << 20


def first_layer(layout: str, tag: str) -> str:
    """Path of the first layer blob of layout:tag (a single-platform image)."""
    def blob(digest: str) -> str:
        return os.path.join(layout, "blobs", *digest.split(":", 1))

    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    desc = next(m for m in index["manifests"]
                if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag)
    with open(blob(desc["digest"])) as f:
        return blob(json.load(f)["layers"][0]["digest"])


def _timed(fn, rounds: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _decompress(mod, blob: bytes) -> None:
    dec = mod.decompressobj(31)
    for i in range(0, len(blob), CHUNK):
        dec.decompress(blob[i:i + CHUNK])


def _compress(mod, level: int, raw: bytes) -> int:
    comp = mod.compressobj(level, mod.DEFLATED, 31)
    size = sum(len(comp.compress(raw[i:i + CHUNK])) for i in range(0, len(raw), CHUNK))
    return size + len(comp.flush())


def measure(blob_path: str, rounds: int = 3) -> tuple[int, list[dict]]:
    """(uncompressed size, one row per available backend and level), medians
    of `rounds` streaming passes over the whole layer in 1 MiB chunks."""
    import importlib

    with open(blob_path, "rb") as f:
        blob = f.read()
    raw = zlib.decompress(blob, 31)
    rows = []
    for name, module, level in CANDIDATES:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        dec, _ = _timed(lambda: _decompress(mod, blob), rounds)
        comp, size = _timed(lambda: _compress(mod, level, raw), rounds)
        rows.append({"library": name, "level": level, "decompress_s": dec, "compress_s": comp,
                     "ratio": size / len(raw)})
    return len(raw), rows


def markdown(raw_size: int, rows: list[dict]) -> str:
    lines = [f"gzip backends on the layer tar ({raw_size / 1e6:.0f} MB uncompressed), median of 3:", "",
             "| library | level | decompress s | compress s | compressed/raw |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['library']} | {r['level']} | {r['decompress_s']:.2f} | {r['compress_s']:.2f} |"
              f" {r['ratio']:.3f} |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    layout = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ORCA_FIXTURES", "/var/cache/orca-fixtures") \
        + "/debian"
    print(markdown(*measure(first_layer(layout, sys.argv[2] if len(sys.argv) > 2 else "bookworm"))))
