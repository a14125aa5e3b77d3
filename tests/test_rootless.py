"""user.rootlesscontainers payloads, byte for byte as umoci writes them."""

from __future__ import annotations

import os
import stat

import pytest

from umoci_py import rootless, unpriv
from umoci_py.errors import LayerError

VECTORS = [  # umoci test/pack_mapping.bats, and 1000:1000 observed on 0.4.7
    ((992, 123), "08e007107b"),
    ((rootless.NOOP, 456), "08ffffffff0f10c803"),
    ((98, rootless.NOOP), "086210ffffffff0f"),
    ((492, 218), "08ec0310da01"),
    ((123, 456), "087b10c803"),
    ((3195, 2318), "08fb18108e12"),
    ((1000, 1000), "08e80710e807"),
]


@pytest.mark.parametrize("owner,hexed", VECTORS)
def test_vectors(owner, hexed):
    assert rootless.encode_owner(*owner) == bytes.fromhex(hexed)
    assert rootless.decode_owner(bytes.fromhex(hexed)) == owner


def test_zero_owner_fields():
    assert rootless.encode_owner(0, 0) is None
    assert rootless.encode_owner(0, 42) == bytes.fromhex("08ffffffff0f102a")
    assert rootless.resolve_owner(bytes.fromhex("08ffffffff0f102a"), 0, 0) == (0, 42)
    assert rootless.resolve_owner(None, 5, 6) == (5, 6)
    assert rootless.decode_owner(b"") == (0, 0)  # absent fields mean root


def test_bad_payloads():
    for bad in (b"\x08", b"\x08\xff", b"\x0f"):
        with pytest.raises(LayerError, match="bad user.rootlesscontainers payload"):
            rootless.decode_owner(bad)


def test_unpriv_reads_and_lists_mode_000_paths_and_restores(tmp_path):
    (tmp_path / "d/e").mkdir(parents=True)
    (tmp_path / "d/e/f").write_bytes(b"data")
    os.chmod(tmp_path / "d/e/f", 0)
    os.chmod(tmp_path / "d/e", 0)
    os.utime(tmp_path / "d/e", (5, 5))
    os.chmod(tmp_path / "d", 0o500)
    with unpriv.Access(str(tmp_path)) as access:
        with unpriv.open_read(access, "d/e/f") as f:
            assert f.read() == b"data"
        assert unpriv.listdir(access, "d/e") == ["f"]
    assert stat.S_IMODE(os.lstat(tmp_path / "d").st_mode) == 0o500
    assert stat.S_IMODE(os.lstat(tmp_path / "d/e").st_mode) == 0
    assert os.lstat(tmp_path / "d/e").st_mtime == 5
    with unpriv.Access(str(tmp_path)) as access:
        unpriv.rmtree(access, "d")
    assert os.listdir(tmp_path) == []
