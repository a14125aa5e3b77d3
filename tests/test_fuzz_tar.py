"""Fuzzing tar extraction: generated and mutated layers either extract inside
the rootfs or raise a UmociError, and never touch the canary beside it."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from fuzz_settings import bounded
from hostile.corpus import make_canary, member, snapshot, tar
from umoci_py.errors import UmociError
from umoci_py.layer.extract import extract_layer
from umoci_py.layer.idmap import MapOptions
from umoci_py.layer.tarstream import TarStream
from umoci_py.unpriv import remove_tree

ROOTLESS = MapOptions(rootless=True)
PARTS = st.sampled_from(["a", "b", "..", ".", "", "canary", ".wh.a", ".wh..wh..opq", ".wh..", "d\n",
                         "\udcff", "x" * 120])
NAMES = st.lists(PARTS, min_size=1, max_size=5).map("/".join)
KINDS = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                         tarfile.CHRTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, b"Z"])


@st.composite
def members(draw, canary: str):
    kind = draw(KINDS)
    link = draw(st.one_of(NAMES, st.sampled_from(["../../canary", canary, canary + "/secret", "/"])))
    data = draw(st.binary(max_size=600)) if kind in (tarfile.REGTYPE, tarfile.CONTTYPE) else b""
    mode = draw(st.sampled_from([0o644, 0o755, 0, 0o4755, 0o7777]))
    return member(draw(NAMES), kind, data=data, link=link, mode=mode, dev=(1, 3))


@st.composite
def layers(draw, canary: str):
    fmt = draw(st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]))
    raw = bytearray(tar(*draw(st.lists(members(canary), max_size=8)), fmt=fmt))
    for offset, value in draw(st.lists(st.tuples(st.integers(0, max(len(raw) - 1, 0)), st.integers(0, 255)),
                                       max_size=4)):
        if raw:
            raw[offset] = value
    cut = draw(st.one_of(st.none(), st.integers(0, len(raw))))
    return bytes(raw[:cut] if cut is not None else raw)


def _extract(layers_for) -> None:
    """Extract each layer into a fresh rootfs next to a canary; check the outside."""
    base = Path(tempfile.mkdtemp(prefix="fuzz-tar-"))
    try:
        make_canary(base / "canary")
        (base / "bundle/rootfs").mkdir(parents=True)
        before = snapshot(base, skip=("bundle",))
        for layer in layers_for(str(base / "canary")):
            try:
                extract_layer(io.BytesIO(layer), base / "bundle/rootfs", ROOTLESS)
            except UmociError:
                pass
        assert snapshot(base, skip=("bundle",)) == before
        assert os.listdir(base / "bundle") == ["rootfs"]
    finally:
        remove_tree(base)


@bounded(400)
@given(st.data())
def test_fuzz_generated_layers(data):
    _extract(lambda canary: data.draw(st.lists(layers(canary), min_size=1, max_size=3)))


@bounded(300)
@given(st.binary(max_size=3000))
def test_fuzz_random_bytes(blob):
    _extract(lambda canary: [blob])


def _with_checksum(block: bytearray) -> bytes:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % (sum(block) & 0o777777)
    return bytes(block)


@st.composite
def header_blocks(draw):
    """A valid header whose fields are then overwritten, checksum fixed up."""
    raw = bytearray(tar(member(draw(NAMES), draw(KINDS), data=b"d" * 700), fmt=tarfile.GNU_FORMAT))
    start = draw(st.sampled_from([0, 100, 108, 124, 136, 156, 157, 257, 329, 345, 483]))
    patch = draw(st.binary(min_size=1, max_size=24))
    raw[start:start + len(patch)] = patch
    raw[:512] = _with_checksum(bytearray(raw[:512]))
    return bytes(raw[:draw(st.integers(0, len(raw)))] if draw(st.booleans()) else raw)


@bounded(1000)
@given(st.one_of(header_blocks(), st.binary(max_size=2000)))
def test_fuzz_reader(data):
    """The reader alone: members with their data, or a LayerError."""
    try:
        stream = TarStream(io.BytesIO(data))
        for ti in stream:
            for _ in stream.data(ti):
                pass
    except UmociError:
        pass
