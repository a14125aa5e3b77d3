"""`umoci-py raw mtree-validate` against manifests go-mtree writes (`gomtree -c`,
built from Debian's go-mtree by tools/make-gomtree) and written by hand."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest
import xattr

from umoci_py_helpers import assert_one_line_error, umoci_py

SECOND = 1_000_000_000


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    (root / "dir/sub").mkdir(parents=True)
    (root / "dir/file").write_text("content\n")
    (root / "dir/sub/other").write_text("other\n")
    (root / "link").symlink_to("dir/file")
    (root / "empty").write_bytes(b"")
    xattr.set(str(root / "empty"), "user.empty_cont", b"", nofollow=True)
    xattr.set(str(root / "dir"), "user.k", b"v", nofollow=True)
    for path in ["dir/file", "dir/sub/other", "empty"]:
        os.chmod(root / path, 0o644)
    for path in ["dir/sub", "dir", "."]:
        os.chmod(root / path, 0o755)
    for path in ["dir/file", "dir/sub/other", "empty", "link", "dir/sub", "dir", "."]:
        os.utime(root / path, ns=(1_700_000_000 * SECOND + 123, 1_700_000_000 * SECOND + 123),
                 follow_symlinks=False)
    return root


def _gomtree(gomtree, root, *args) -> str:
    return subprocess.run([gomtree, "-c", "-p", root, *args], check=True, capture_output=True,
                          text=True).stdout


def _validate(manifest, root, *args):
    return umoci_py("raw", "mtree-validate", "-f", manifest, "-p", root, *args, check=False)


def test_gomtree_default_keywords_with_sha256digest(gomtree, tree, tmp_path):
    manifest = tmp_path / "m"
    manifest.write_text(_gomtree(gomtree, tree, "-K", "sha256digest"))
    assert " time=1700000000.000000123" in manifest.read_text()  # gomtree's default set has time
    proc = _validate(manifest, tree)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")

    (tree / "dir/file").write_text("CONTENT\n")  # same size, same mtime: only the digest tells
    os.utime(tree / "dir/file", ns=(1_700_000_000 * SECOND + 123, 1_700_000_000 * SECOND + 123))
    (tree / "dir/new").write_text("n")
    (tree / "empty").unlink()
    proc = _validate(manifest, tree)
    assert proc.returncode == 1
    # The directories changed too (mtime, nlink or size), as go-mtree reports.
    assert sorted(proc.stdout.splitlines()) == [".: modified", "dir/file: modified", "dir/new: extra",
                                                "dir: modified", "empty: missing"]


def test_keyword_selection_and_tar_time(gomtree, tree, tmp_path):
    manifest = tmp_path / "m"
    manifest.write_text(_gomtree(gomtree, tree, "-K", "sha256digest"))
    # Nanoseconds only: "time" sees it, "tar_time" (whole seconds, as tar keeps) does not.
    os.utime(tree / "dir/file", ns=(1_700_000_000 * SECOND + 999, 1_700_000_000 * SECOND + 999))
    assert _validate(manifest, tree).stdout == "dir/file: modified\n"
    for args in (["-k", "tar_time"], ["-k", "size,tar_time,sha256"], ["-k", "uid", "-K", "tar_time"]):
        proc = _validate(manifest, tree, *args)
        assert (proc.returncode, proc.stdout) == (0, ""), args
    os.utime(tree / "dir/file", ns=(1_700_000_001 * SECOND, 1_700_000_001 * SECOND))
    assert _validate(manifest, tree, "-k", "tar_time").stdout == "dir/file: modified\n"
    # Keywords outside the selection are not compared.
    assert _validate(manifest, tree, "-k", "size,sha256digest").stdout == ""

    # A gomtree manifest made with tar_time and xattrs checks out as well.
    manifest.write_text(_gomtree(gomtree, tree, "-k", "size,type,mode,link,tar_time,sha256digest,xattr"))
    assert "xattr.user.empty_cont=" in manifest.read_text().split()
    assert _validate(manifest, tree).stdout == ""
    xattr.set(str(tree / "dir"), "user.k", b"w", nofollow=True)
    assert _validate(manifest, tree).stdout == "dir: modified\n"
    assert _validate(manifest, tree, "-k", "size").stdout == ""


def test_hand_written_go_mtree_text(tree, tmp_path):
    digest = hashlib.sha256(b"content\n").hexdigest()
    manifest = tmp_path / "m"
    manifest.write_text(f"""\
#          user: someone
#      keywords: size,type,uid,gid,mode,link,nlink,time,sha256digest

# .
/set type=file nlink=1 mode=0664
. type=dir mode=0755 nlink=3 time=1700000000.000000123
    empty size=0 mode=0644 time=1700000000.000000123 xattr.user.empty_cont=
    link type=link mode=0777 link=dir/file time=1700000000.000000123

# dir
dir type=dir mode=0755 nlink=3 time=1700000000.000000123 xattr.user.k=dg==
    file size=8 mode=0644 time=1700000000.000000123 sha256digest={digest}

# dir/sub
sub type=dir mode=0755 nlink=2 time=1700000000.000000123
    other size=6 mode=0644 time=1700000000.000000123
# dir/sub
..

..

""")
    proc = _validate(manifest, tree)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    os.chmod(tree / "dir/sub/other", 0o600)
    assert _validate(manifest, tree).stdout == "dir/sub/other: modified\n"


def test_unsupported_keyword_is_one_line(tree, tmp_path):
    (tmp_path / "m").write_text(". type=dir\n")
    proc = _validate(tmp_path / "m", tree, "-k", "cksum")
    assert_one_line_error(proc, "mtree keyword 'cksum' is not supported")
