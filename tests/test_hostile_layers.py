"""Hostile layers through the umoci-py CLI: extracted inside the rootfs or refused.

Every case is unpacked twice (``unpack --rootless`` and ``raw unpack
--rootless``) into ``work/bundle``, beside a canary directory the layers aim
at.  A full snapshot of everything in ``work`` except the bundle (canary and
layout: paths, modes, mtimes, contents) must be identical afterwards, and a
refused unpack leaves nothing where the bundle or rootfs would have been.
"""

from __future__ import annotations

import stat

import pytest

from hostile.corpus import LAYER_CASES, make_canary, snapshot, write_image
from umoci_py_helpers import assert_one_line_error, tree_snapshot, umoci_py

MODES = ("unpack", "raw")


@pytest.fixture
def work(tmp_path):
    work = tmp_path / "work"
    make_canary(work / "canary")
    return work


def _unpack(work, case, mode):
    write_image(work / "layout", "t", case.layers(str(work / "canary")))
    image = ["--image", f"{work / 'layout'}:t", *case.flags]
    before = snapshot(work, skip=("bundle",))
    if mode == "unpack":
        proc = umoci_py("unpack", "--rootless", *image, work / "bundle", check=False)
    else:
        (work / "bundle").mkdir()
        proc = umoci_py("raw", "unpack", "--rootless", *image, work / "bundle/rootfs", check=False)
    assert snapshot(work, skip=("bundle",)) == before
    return proc


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: c.name)
def test_hostile_layer(work, case, mode):
    proc = _unpack(work, case, mode)
    if case.refused:
        assert_one_line_error(proc, case.refused, str(work / "layout"))
        left = list((work / "bundle").iterdir()) if (work / "bundle").exists() else []
        assert left == [] and (mode == "raw" or not (work / "bundle").exists())
        return
    assert proc.returncode == 0, proc.stderr
    rootfs = work / "bundle/rootfs"
    case.check(rootfs, str(work / "canary"))
    if mode == "unpack":
        assert (work / "bundle/umoci.json").is_file()


def test_mode_000_tree_keeps_its_modes(work):
    case = next(c for c in LAYER_CASES if c.name == "mode-000")
    assert _unpack(work, case, "unpack").returncode == 0
    tree = tree_snapshot(work / "bundle/rootfs")
    assert {p: tree[p][1] for p in ("z", "z/sub", "z/sub/f", "z/f")} == dict.fromkeys(
        ("z", "z/sub", "z/sub/f", "z/f"), 0)
    assert stat.S_ISDIR(tree["z/sub"][0])


def test_refused_unpack_into_existing_empty_bundle_dir_leaves_it_empty(work):
    case = next(c for c in LAYER_CASES if c.name == "symlink-loop")
    (work / "bundle").mkdir()
    write_image(work / "layout", "t", case.layers(str(work / "canary")))
    proc = umoci_py("unpack", "--rootless", "--image", f"{work / 'layout'}:t", work / "bundle", check=False)
    assert_one_line_error(proc, "too many levels")
    assert list((work / "bundle").iterdir()) == []
