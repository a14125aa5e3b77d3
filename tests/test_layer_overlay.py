"""umoci_py.layer.overlay: a layer unpacked as an overlay upper, and the layer
read back from the upper equal to the one a full-tree diff makes."""

from __future__ import annotations

import io
import os
import stat
import tarfile

from umoci_py import mtree
from umoci_py.layer.generate import generate_layer
from umoci_py.layer.overlay import OPAQUE_XATTR, generate_upper_layer, layer_changes, manifest, upper_changes
from umoci_py.layer.overlayunpack import unpack_layer_as_upper
from layer_tars import ROOTLESS, apply, entry, make_tar

LOWER = [entry(".", tarfile.DIRTYPE), entry("a", data=b"a"), entry("d", tarfile.DIRTYPE),
         entry("d/x", data=b"x"), entry("d/sub", tarfile.DIRTYPE), entry("d/sub/y", data=b"y"),
         entry("e", tarfile.DIRTYPE), entry("e/z", data=b"z"), entry("keep", data=b"k", uid=5, gid=6),
         entry("gone", tarfile.DIRTYPE), entry("gone/deep", data=b"g")]
UPPER = [entry(".", tarfile.DIRTYPE, mtime=1_700_000_000), entry(".wh.a"),
         entry("d", tarfile.DIRTYPE, mode=0o700), entry("d/.wh..wh..opq"), entry("d/new", data=b"n"),
         entry("e", tarfile.DIRTYPE, mtime=1_700_000_001), entry("e/.wh.z"), entry(".wh.gone"),
         entry("b", data=b"b", uid=1000, gid=1000), entry("dev", tarfile.CHRTYPE, dev=(1, 3))]


def _tar(root, deltas, generate) -> bytes:
    out = io.BytesIO()
    generate(root, deltas, ROOTLESS, out)
    return out.getvalue()


def test_unpacked_upper_gives_back_the_layer_a_full_tree_diff_gives(tmp_path):
    lower, full, upper = tmp_path / "lower", tmp_path / "full", tmp_path / "upper"
    apply(lower, *LOWER)
    apply(full, *LOWER)
    apply(full, *UPPER)
    upper.mkdir()
    unpack_layer_as_upper(io.BytesIO(make_tar(*UPPER)), upper, ROOTLESS)

    st = os.lstat(upper / "a")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(upper / "d", OPAQUE_XATTR) == b"y"
    assert stat.S_ISCHR(os.lstat(upper / "e" / "z").st_mode) and not (upper / "d" / "x").exists()

    changes = upper_changes(upper, manifest(lower), [str(lower)])
    deltas, merged = changes.deltas, changes.tree.apply(manifest(lower))
    kinds = {d.path: d.kind for d in deltas}
    assert {p: kinds[p] for p in ("a", "d/x", "d/sub", "e/z", "gone")} == \
        dict.fromkeys(("a", "d/x", "d/sub", "e/z", "gone"), "missing")
    assert "d/sub/y" not in kinds and "gone/deep" not in kinds  # one whiteout per removed tree
    assert kinds["b"] == "extra" and kinds["d"] == "modified" and "keep" not in kinds
    assert merged == manifest(full)
    # what the snapshot store keeps: the upper's entries and the lower paths it hides, not the tree
    assert set(changes.tree.entries) == {".", "b", "d", "d/new", "dev", "e"}
    assert changes.tree.removed == ["a", "d/sub", "d/sub/y", "d/x", "e/z", "gone", "gone/deep"]

    walked = layer_changes(mtree.walk(lower, mtree.KEYWORDS), mtree.walk(full, mtree.KEYWORDS))
    assert _tar(upper, deltas, generate_upper_layer) == _tar(full, walked, generate_layer)


def test_a_copied_up_file_equal_to_its_lower_is_no_change(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    apply(lower, *LOWER)
    apply(upper, entry(".", tarfile.DIRTYPE), entry("keep", data=b"k", uid=5, gid=6),
          entry("e", tarfile.DIRTYPE), entry("e/z", data=b"Z"))
    deltas = upper_changes(upper, manifest(lower), [str(lower)]).deltas
    assert sorted((d.path, d.kind) for d in deltas) == [(".", "modified"), ("e", "modified"),
                                                         ("e/z", "modified")]
