"""user.rootlesscontainers payloads, byte for byte as umoci writes them."""

from __future__ import annotations

import io
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


# -- file capabilities ----------------------------------------------------------
# cap_net_raw+ep as root stores it (revision 2) and as root of a user namespace
# whose root is host uid 1001 does (revision 3): iputils-ping's postinst, seen.
NET_RAW_V2 = bytes.fromhex("0100000200200000000000000000000000000000")
NET_RAW_V3 = bytes.fromhex("0100000300200000000000000000000000000000e9030000")


def test_capability_revisions_decode_and_v3_loses_its_rootid():
    v2, v3 = rootless.decode_caps(NET_RAW_V2), rootless.decode_caps(NET_RAW_V3)
    assert (v2.effective, v2.permitted, v2.inheritable, v2.rootid) == (True, 1 << 13, 0, None)
    assert (v3.effective, v3.permitted, v3.inheritable, v3.rootid) == (True, 1 << 13, 0, 1001)
    assert rootless.caps_v2(NET_RAW_V3) == rootless.caps_v2(NET_RAW_V2) == NET_RAW_V2
    # Capabilities 32-63 (cap_bpf = 39) and inheritable sets go to their own words.
    high = rootless.FileCaps(rootless.VFS_CAP_REVISION_3, 1 << 39 | 1, 1 << 33, 0)
    assert high.v2() == bytes.fromhex("00000002" "01000000" "00000000" "80000000" "02000000")
    assert rootless.decode_caps(high.v2()).permitted == 1 << 39 | 1


@pytest.mark.parametrize("bad", [b"", NET_RAW_V2[:12], NET_RAW_V2 + b"\0",
                                 bytes.fromhex("01000003") + NET_RAW_V2[4:],   # v3 magic, v2 size
                                 bytes.fromhex("01000002") + NET_RAW_V3[4:]])  # v2 magic, v3 size
def test_bad_capability_values_are_refused(bad):
    with pytest.raises(LayerError, match="bad security.capability value"):
        rootless.decode_caps(bad)


def test_capability_record_holds_while_the_content_does():
    digest = rootless.content_sha256(io.BytesIO(b"ping"))
    record = rootless.encode_caps_record(NET_RAW_V3, digest)
    assert record == NET_RAW_V2 + digest
    assert rootless.caps_from_record(record, digest) == NET_RAW_V2
    assert rootless.caps_from_record(record, rootless.content_sha256(io.BytesIO(b"pong"))) is None
    with pytest.raises(LayerError, match="bad user.orca.capability record"):
        rootless.caps_from_record(record[:-1], digest)
