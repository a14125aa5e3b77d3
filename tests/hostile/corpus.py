"""Hostile layers and images, generated at test time (no binary files in git).

A layer case is a list of layers (tar bytes), built knowing the absolute path
of a canary directory beside the bundle so that escapes aim at something the
test can watch.  Each case either extracts faithfully inside the rootfs
(``check`` says what must be there) or is refused with a message fragment.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

LAYER = "application/vnd.oci.image.layer.v1.tar"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
REF = "org.opencontainers.image.ref.name"

# -- tars ---------------------------------------------------------------------


def member(name, kind=tarfile.REGTYPE, data=b"", mode=None, link="", dev=(0, 0), size=None, pax=None):
    """(TarInfo, data); names may carry surrogate-escaped non-UTF-8 bytes."""
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode if mode is not None else (0o755 if kind == tarfile.DIRTYPE else 0o644)
    ti.mtime = 1_600_000_000
    ti.linkname = link
    ti.devmajor, ti.devminor = dev
    ti.size = size if size is not None else (len(data) if kind == tarfile.REGTYPE else 0)
    ti.pax_headers.update(pax or {})
    return ti, data


def tar(*members, fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as out:
        for ti, data in members:
            out.addfile(ti, io.BytesIO(data) if ti.size else None)
    return buf.getvalue()


def header_only(ti: tarfile.TarInfo, fmt=tarfile.GNU_FORMAT) -> bytes:
    """One header block (or several, with extensions) and no data or end marker."""
    return ti.tobuf(fmt, "utf-8", "surrogateescape")


# -- images -------------------------------------------------------------------


def put_blob(layout: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / digest[7:]).write_bytes(data)
    return digest


def descriptor(layout: Path, media_type: str, data: bytes) -> dict:
    return {"mediaType": media_type, "digest": put_blob(layout, data), "size": len(data)}


def json_bytes(doc) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def write_image(layout: Path, tag: str, layers: list[bytes], compression: str = "gzip",
                mutate_config: Callable[[dict], None] | None = None,
                mutate_manifest: Callable[[dict], None] | None = None) -> None:
    """A layout (created if missing) whose `tag` has these uncompressed layers."""
    (layout / "blobs/sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    descs, diff_ids = [], []
    for raw in layers:
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        if compression == "gzip":
            descs.append(descriptor(layout, LAYER + "+gzip", gzip.compress(raw, 1, mtime=0)))
        else:
            descs.append(descriptor(layout, LAYER, raw))
    config = {"architecture": "amd64", "os": "linux", "config": {},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    if mutate_config:
        mutate_config(config)
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST,
                "config": descriptor(layout, CONFIG, json_bytes(config)), "layers": descs}
    if mutate_manifest:
        mutate_manifest(manifest)
    entry = descriptor(layout, MANIFEST, json_bytes(manifest))
    entry["annotations"] = {REF: tag}
    index_path = layout / "index.json"
    index = json.loads(index_path.read_bytes()) if index_path.exists() else \
        {"schemaVersion": 2, "mediaType": INDEX, "manifests": []}
    index["manifests"] = [m for m in index["manifests"] if m.get("annotations", {}).get(REF) != tag]
    index["manifests"].append(entry)
    index_path.write_bytes(json_bytes(index))


# -- watching the outside -----------------------------------------------------


def make_canary(path: Path) -> None:
    """Something worth attacking: files, a subdirectory, a symlink, a read-only file."""
    (path / "sub").mkdir(parents=True)
    (path / "secret").write_text("secret\n")
    (path / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (path / "sub/deep").write_text("deep\n")
    (path / "ro").write_text("read only\n")
    os.chmod(path / "ro", 0o444)
    os.symlink("secret", path / "link")
    for p in (path / "sub/deep", path / "sub", path / "secret"):
        os.utime(p, ns=(1_000_000_000, 1_000_000_000), follow_symlinks=False)


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """relpath -> (mode, mtime_ns, size, content digest or link target) of
    everything under root except the top-level names in skip."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
            filenames = [f for f in filenames if f not in skip]
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    content = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(full)
            else:
                content = ""
            out[os.path.relpath(full, root)] = (st.st_mode, st.st_mtime_ns, st.st_size, content)
    return out


# -- layer cases --------------------------------------------------------------


@dataclass
class LayerCase:
    name: str
    layers: Callable[[str], list[bytes]]  # canary absolute path -> layers
    refused: str | None = None  # fragment of the one-line error, None: must extract
    check: Callable[[Path, str], None] = lambda rootfs, canary: None
    flags: tuple[str, ...] = field(default=())


def _is_file(path: Path, data: bytes) -> None:
    assert path.is_file() and not path.is_symlink(), path
    assert path.read_bytes() == data, path


def _inside(rootfs: Path, canary: str) -> Path:
    """Where an absolute canary path lands when clamped to the rootfs."""
    return rootfs / canary.lstrip("/")


def _names(path: Path) -> set[bytes]:
    return set(os.listdir(os.fsencode(path)))


def _check_dotdot(rootfs, canary):
    _is_file(rootfs / "canary/evil", b"dotdot")
    _is_file(rootfs / "x", b"nested dotdot")


def _check_absolute(rootfs, canary):
    _is_file(rootfs / "abs/file", b"abs")
    _is_file(_inside(rootfs, canary) / "evil", b"absolute canary")


def _check_through_abs_link(rootfs, canary):
    assert os.readlink(rootfs / "a") == canary
    _is_file(_inside(rootfs, canary) / "passwd", b"pwned\n")


def _check_through_rel_link(rootfs, canary):
    assert os.readlink(rootfs / "b") == "../../canary"
    _is_file(rootfs / "canary/evil", b"relative")


def _check_chain(rootfs, canary):
    assert os.readlink(rootfs / "c1") == "c2"
    _is_file(rootfs / "canary/chained", b"chain")


def _check_keep_dirlinks(rootfs, canary):
    # The link's target does not exist inside the root, so the directory replaces the link.
    assert (rootfs / "k").is_dir() and not (rootfs / "k").is_symlink()
    _is_file(rootfs / "k/x", b"kept")


def _check_hardlink_to_link(rootfs, canary):
    assert os.readlink(rootfs / "h") == f"{canary}/secret"
    assert os.lstat(rootfs / "h").st_ino == os.lstat(rootfs / "s").st_ino


def _check_whiteout_outside(rootfs, canary):
    _is_file(rootfs / "keep", b"keep")


def _check_devices(rootfs, canary):
    for name, marker in (("null", b"c 1 3"), ("sda", b"b 8 0")):
        path = rootfs / "dev" / name
        assert path.is_file() and path.stat().st_size == 0
        assert os.getxattr(path, "user.orca.device") == marker


def _check_big(rootfs, canary):
    path = rootfs / "big"
    assert path.stat().st_size == BIG
    with open(path, "rb") as f:
        f.seek(BIG - 4)
        assert f.read() == b"end\n"


def _check_long(rootfs, canary):
    _is_file(rootfs / LONG_GNU, b"gnu long")
    assert os.readlink(rootfs / "gnulink") == LONG_TARGET
    _is_file(rootfs / LONG_PAX, b"pax long")
    assert os.readlink(rootfs / "paxlink") == LONG_TARGET


def _check_duplicates(rootfs, canary):
    _is_file(rootfs / "dup", b"second")
    _is_file(rootfs / "d2f", b"now a file")
    assert (rootfs / "f2d").is_dir() and _names(rootfs / "f2d") == {b"inner"}


def _check_dir_file_dir(rootfs, canary):
    assert (rootfs / "d").is_dir() and _names(rootfs / "d") == {b"g"}
    _is_file(rootfs / "d/g", b"back")


def _check_mode_000(rootfs, canary):
    # Below z nothing is reachable without opening it up (test_hostile_layers does).
    assert stat.S_IMODE(os.lstat(rootfs / "z").st_mode) == 0


def _check_odd_names(rootfs, canary):
    assert _names(rootfs / "odd") == {b"new\nline", b"\xff\xfe-latin", b"tab\there", b" space "}
    _is_file(Path(os.fsdecode(os.fsencode(rootfs) + b"/odd/\xff\xfe-latin")), b"bytes")


def _check_trailing_zeros(rootfs, canary):
    _is_file(rootfs / "f", b"ok")


BIG = 48 << 20
LONG_GNU = "g" * 120 + "/" + "h" * 120 + "/" + "file-" + "i" * 100
LONG_PAX = "p" * 150 + "/" + "q" * 150
LONG_TARGET = "../" + "t" * 200
D, F, SYM, LNK = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE


def _big_file() -> bytes:
    return tar(member("big", data=bytes(BIG - 4) + b"end\n"))


def _sparse_gnu() -> bytes:
    ti = member("sparse", tarfile.GNUTYPE_SPARSE, size=0)[0]
    return header_only(ti) + bytes(1024)


def _huge_declared() -> bytes:
    ti = member("huge", size=1 << 40)[0]
    return header_only(ti) + b"only a little data" + bytes(1024)


def _truncated() -> bytes:
    good = tar(member("a", data=b"x" * 5000), member("b", data=b"y" * 5000))
    return good[:512 + 3000]


def _truncated_header() -> bytes:
    return tar(member("a", data=b"x"))[:512 + 512 + 100]


def _garbage_instead_of_end() -> bytes:
    good = tar(member("f", data=b"ok"))
    return good[:1024] + b"this is not a tar header at all" * 40


def _trailing_zeros() -> bytes:
    return tar(member("f", data=b"ok")) + bytes(4096) + b"junk after the end marker"


def _bad_checksum() -> bytes:
    raw = bytearray(tar(member("f", data=b"ok")))
    raw[0] ^= 0x01
    return bytes(raw)


LAYER_CASES: list[LayerCase] = [
    LayerCase("dotdot", lambda c: [tar(member("../../canary/evil", data=b"dotdot"),
                                       member("a/b/../../../../x", data=b"nested dotdot"))],
              check=_check_dotdot),
    LayerCase("absolute", lambda c: [tar(member("/abs/file", data=b"abs"),
                                         member(c + "/evil", data=b"absolute canary"))],
              check=_check_absolute),
    LayerCase("through-absolute-symlink", lambda c: [tar(member("a", SYM, link=c),
                                                         member("a/passwd", data=b"pwned\n"))],
              check=_check_through_abs_link),
    LayerCase("through-relative-symlink", lambda c: [tar(member("b", SYM, link="../../canary"),
                                                         member("b/evil", data=b"relative"))],
              check=_check_through_rel_link),
    LayerCase("through-symlink-next-layer", lambda c: [tar(member("b", SYM, link="../../canary")),
                                                       tar(member("b/evil", data=b"relative"))],
              check=_check_through_rel_link),
    LayerCase("symlink-chain", lambda c: [tar(member("c1", SYM, link="c2"), member("c2", SYM, link="./c3/"),
                                              member("c3", SYM, link="../../../canary"),
                                              member("c1/chained", data=b"chain"))],
              check=_check_chain),
    LayerCase("symlink-loop", lambda c: [tar(member("l1", SYM, link="l2"), member("l2", SYM, link="l1"),
                                             member("l1/x", data=b"loop"))],
              refused="too many levels of symbolic links"),
    LayerCase("symlink-self-loop", lambda c: [tar(member("me", SYM, link="me/me"),
                                                  member("me/x", data=b"loop"))],
              refused="too many levels of symbolic links"),
    LayerCase("symlink-to-file-as-dir", lambda c: [tar(member("f", data=b"f"), member("s", SYM, link="f"),
                                                       member("s/x", data=b"x"))],
              refused="not a directory"),
    LayerCase("keep-dirlinks-outside", lambda c: [tar(member("k", SYM, link=c), member("k", D),
                                                      member("k/x", data=b"kept"))],
              check=_check_keep_dirlinks,
              flags=("--keep-dirlinks",)),
    LayerCase("hardlink-outside", lambda c: [tar(member("h", LNK, link="../../canary/secret"))],
              refused="hard link to missing"),
    LayerCase("hardlink-absolute", lambda c: [tar(member("h", LNK, link=c + "/secret"))],
              refused="hard link to missing"),
    LayerCase("hardlink-through-symlink", lambda c: [tar(member("s", SYM, link=c),
                                                         member("h", LNK, link="s/secret"))],
              refused="hard link to missing"),
    LayerCase("hardlink-to-outside-symlink", lambda c: [tar(member("s", SYM, link=c + "/secret"),
                                                            member("h", LNK, link="s"))],
              check=_check_hardlink_to_link),
    LayerCase("hardlink-to-directory", lambda c: [tar(member("d", D), member("h", LNK, link="d"))],
              refused="layer entry 'h'"),
    LayerCase("hardlink-to-root", lambda c: [tar(member("h", LNK, link="/"))],
              refused="hard link to missing"),
    LayerCase("whiteout-outside", lambda c: [tar(member("keep", data=b"keep")),
                                             tar(member("../../canary/.wh.secret"),
                                                 member(c + "/.wh.passwd"),
                                                 member("../../canary/sub/.wh..wh..opq"))],
              check=_check_whiteout_outside),
    LayerCase("whiteout-through-symlink", lambda c: [tar(member("keep", data=b"keep"), member("s", SYM, link=c),
                                                         member("r", SYM, link="../../canary")),
                                                     tar(member("s/.wh.secret"), member("r/.wh.passwd"),
                                                         member("r/.wh..wh..opq"), member("s/sub/.wh..wh..opq"))],
              check=lambda r, c: (_check_whiteout_outside(r, c), os.readlink(r / "s")) and None),
    LayerCase("whiteout-dotdot", lambda c: [tar(member("top", data=b"top"), member("d", D),
                                                member("d/keep", data=b"keep")),
                                            tar(member("d/.wh..."))],
              refused="invalid whiteout"),
    LayerCase("whiteout-dotdot-at-root", lambda c: [tar(member("top", data=b"top")), tar(member(".wh..."))],
              refused="invalid whiteout"),
    LayerCase("whiteout-dot", lambda c: [tar(member("d", D), member("d/keep", data=b"keep")),
                                         tar(member("d/.wh.."))],
              refused="invalid whiteout"),
    LayerCase("devices", lambda c: [tar(member("dev", D), member("dev/null", tarfile.CHRTYPE, dev=(1, 3)),
                                        member("dev/sda", tarfile.BLKTYPE, dev=(8, 0)))],
              check=_check_devices),
    LayerCase("sparse-gnu", lambda c: [_sparse_gnu()], refused="sparse files are not supported"),
    LayerCase("sparse-pax", lambda c: [tar(member("sp", data=b"x", pax={"GNU.sparse.major": "1",
                                                                       "GNU.sparse.minor": "0"}))],
              refused="sparse files are not supported"),
    LayerCase("big-file", lambda c: [_big_file()], check=_check_big),
    LayerCase("huge-declared-size", lambda c: [_huge_declared()], refused="unexpected end of data"),
    LayerCase("long-names", lambda c: [tar(member(LONG_GNU, data=b"gnu long"),
                                           member("gnulink", SYM, link=LONG_TARGET), fmt=tarfile.GNU_FORMAT),
                                       tar(member(LONG_PAX, data=b"pax long"),
                                           member("paxlink", SYM, link=LONG_TARGET))],
              check=_check_long),
    LayerCase("duplicates", lambda c: [tar(member("dup", data=b"first"), member("dup", data=b"second"),
                                           member("d2f", D), member("d2f/x", data=b"x"),
                                           member("d2f", data=b"now a file"),
                                           member("f2d", data=b"file"), member("f2d", D),
                                           member("f2d/inner", data=b"in"))],
              check=_check_duplicates),
    LayerCase("dir-file-dir", lambda c: [tar(member("d", D), member("d/f", data=b"f")),
                                         tar(member("d", data=b"file now")),
                                         tar(member("d", D), member("d/g", data=b"back"))],
              check=_check_dir_file_dir),
    LayerCase("mode-000", lambda c: [tar(member("z", D, mode=0), member("z/sub", D, mode=0),
                                         member("z/sub/f", data=b"f", mode=0)),
                                     tar(member("z/f", data=b"later", mode=0))],
              check=_check_mode_000),
    LayerCase("odd-names", lambda c: [tar(member("odd", D), member("odd/new\nline", data=b"nl"),
                                          member("odd/\udcff\udcfe-latin", data=b"bytes"),
                                          member("odd/tab\there", data=b"tab"),
                                          member("odd/ space ", data=b"sp"))],
              check=_check_odd_names),
    LayerCase("odd-names-gnu", lambda c: [tar(member("odd", D), member("odd/new\nline", data=b"nl"),
                                              member("odd/\udcff\udcfe-latin", data=b"bytes"),
                                              member("odd/tab\there", data=b"tab"),
                                              member("odd/ space ", data=b"sp"), fmt=tarfile.GNU_FORMAT)],
              check=_check_odd_names),
    LayerCase("root-as-file", lambda c: [tar(member("./", data=b"x"))], refused="the root must be a directory"),
    LayerCase("truncated-data", lambda c: [_truncated()], refused="unexpected end of data"),
    LayerCase("truncated-header", lambda c: [_truncated_header()], refused="unexpected end of data"),
    LayerCase("garbage-instead-of-end", lambda c: [_garbage_instead_of_end()], refused="bad layer tar"),
    LayerCase("bad-checksum", lambda c: [_bad_checksum()], refused="bad layer tar"),
    LayerCase("trailing-data-after-end", lambda c: [_trailing_zeros()], check=_check_trailing_zeros),
    LayerCase("not-a-tar", lambda c: [b"PK\x03\x04 a zip file, not a tar" * 30], refused="bad layer tar"),
]
