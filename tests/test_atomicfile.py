"""umoci_py.atomicfile: the target holds the old bytes or the new, never a part."""

import os

import pytest

from umoci_py.atomicfile import atomic_file


def test_replaces_whole_with_the_mode_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.tar"
    target.write_bytes(b"old")
    with atomic_file(target, 0o640) as f:
        f.write(b"new ")
        assert target.read_bytes() == b"old"  # nothing shows before the end
        f.write(b"bytes")
    assert target.read_bytes() == b"new bytes"
    assert os.stat(target).st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["out.tar"]


def test_an_error_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "index.json"
    target.write_bytes(b"{}")
    with pytest.raises(RuntimeError):
        with atomic_file(target, 0o644, prefix=".umoci-") as f:
            f.write(b"half")
            raise RuntimeError("killed midway")
    assert target.read_bytes() == b"{}"
    assert os.listdir(tmp_path) == ["index.json"]


def test_temp_file_goes_to_tmp_dir_with_the_prefix(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    seen = []
    with atomic_file(tmp_path / "f", 0o600, prefix=".umoci-", tmp_dir=scratch) as f:
        seen = os.listdir(scratch)
        f.write(b"x")
    assert len(seen) == 1 and seen[0].startswith(".umoci-")
    assert (tmp_path / "f").read_bytes() == b"x" and os.listdir(scratch) == []
