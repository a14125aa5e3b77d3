"""COPY/ADD sources: confinement to the context, selection, content digest, writes with owners."""

import os
import tarfile

import pytest
import xattr

from orca import copy as cp
from orca.dockerfile.instructions import parse_chmod
from orca.errors import BuildError
from umoci_py.rootless import XATTR_NAME, decode_owner


@pytest.fixture
def ctx(tmp_path):
    c = tmp_path / "ctx"
    (c / "src/sub").mkdir(parents=True)
    (c / "src/a.txt").write_text("A")
    (c / "src/sub/b.txt").write_text("B")
    (c / "top.c").write_text("int main(){}")
    (c / "other.c").write_text("x")
    (tmp_path / "secret").write_text("outside")
    os.symlink("../secret", c / "escape")
    return c


@pytest.mark.parametrize("pattern", ["../secret", "src/../../secret", "escape"])
def test_sources_outside_the_context_are_refused(ctx, pattern):
    with pytest.raises(BuildError, match="outside the build context"):
        cp.select(ctx, [pattern], "Dockerfile:3: COPY")


def test_missing_source_names_the_pattern(ctx):
    with pytest.raises(BuildError, match="'nope' not found"):
        cp.select(ctx, ["nope"], "Dockerfile:3: COPY")


def test_glob_and_ignore(ctx):
    got = cp.select(ctx, ["*.c"], "COPY", excluded=lambda rel: rel == "other.c")
    assert [s.rel for s in got] == ["top.c"]
    assert all(s.globbed for s in got)


def test_digest_ignores_mtime_but_not_content_mode_or_ignored_files(ctx):
    srcs = cp.select(ctx, ["src"], "COPY")
    d0 = cp.content_digest(ctx, srcs)
    os.utime(ctx / "src/a.txt", (1, 1))
    assert cp.content_digest(ctx, srcs) == d0
    (ctx / "src/a.txt").write_text("A2")
    d1 = cp.content_digest(ctx, srcs)
    assert d1 != d0
    os.chmod(ctx / "src/a.txt", 0o600)
    assert cp.content_digest(ctx, srcs) != d1
    ignored = lambda rel: rel.startswith("src/sub")  # noqa: E731
    d2 = cp.content_digest(ctx, srcs, ignored)
    (ctx / "src/sub/b.txt").write_text("changed")
    assert cp.content_digest(ctx, srcs, ignored) == d2


def test_directory_copied_as_contents_with_chown_owner(ctx, tmp_path):
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    ignored = lambda rel: rel == "src/sub/b.txt"  # noqa: E731
    srcs = cp.select(ctx, ["src"], "COPY", excluded=ignored)
    dest, as_dir = cp.destination(rootfs, "app", "/work", srcs, "COPY")
    assert dest == "/work/app"
    cp.copy_sources(ctx, srcs, rootfs, dest, as_dir, cp.CopyOptions(owner=(1000, 50), chmod=parse_chmod("750")), ignored)
    f = rootfs / "work/app/a.txt"
    assert f.read_text() == "A"
    assert oct(f.stat().st_mode & 0o7777) == oct(0o750)
    assert decode_owner(xattr.get(str(f), XATTR_NAME)) == (1000, 50)
    assert (rootfs / "work/app/sub").is_dir()
    assert not (rootfs / "work/app/sub/b.txt").exists()  # ignored files never reach the rootfs


def _tree(root, tag: str, n: int = 60) -> dict:
    """n files over three directories, with assorted sizes, modes and mtimes:
    {relative name: (bytes, mode, mtime_ns)}."""
    modes = [0o644, 0o444, 0o400, 0o755, 0o600, 0o4755]
    out = {}
    for i in range(n):
        rel = f"d{i % 3}/f{i:03d}"
        data = (f"{tag}{i}".encode() * (i * 37)) if i != 7 else bytes(range(256)) * 4096  # one 1 MiB file
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        os.chmod(root / rel, modes[i % len(modes)])
        os.utime(root / rel, ns=(10**9, (1000 + i) * 10**9))
        out[rel] = (data, modes[i % len(modes)], (1000 + i) * 10**9)
    return out


def test_many_files_keep_bytes_modes_times_and_the_chown_owner(tmp_path):
    ctx = tmp_path / "ctx"
    want = _tree(ctx, "x")
    rootfs = tmp_path / "rootfs"
    (rootfs / "app/d0/f000").mkdir(parents=True)  # a directory where a file goes
    (rootfs / "app/d1").write_text("a file where a directory goes")
    os.symlink("/nowhere", rootfs / "app/d0/f003")
    srcs = cp.select(ctx, ["."], "COPY")
    dest, as_dir = cp.destination(rootfs, "/app/", "/", srcs, "COPY")
    cp.copy_sources(ctx, srcs, rootfs, dest, as_dir, cp.CopyOptions(owner=(1000, 50)))
    for rel, (data, mode, mtime) in want.items():
        got = rootfs / "app" / rel
        st = os.lstat(got)
        assert (got.read_bytes(), st.st_mode & 0o7777, st.st_mtime_ns) == (data, mode, mtime), rel
        # a read-only file gets its owner too (the xattr goes on before the mode)
        assert decode_owner(xattr.get(str(got), XATTR_NAME)) == (1000, 50), rel
    assert sorted(os.listdir(rootfs / "app/d0")) == sorted(r[3:] for r in want if r.startswith("d0/"))


def test_a_later_source_replaces_an_earlier_ones_files_with_context_owners(tmp_path):
    ctx = tmp_path / "ctx"
    _tree(ctx / "one", "1")
    want = _tree(ctx / "two", "2")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    srcs = cp.select(ctx, ["one", "two"], "COPY")
    dest, as_dir = cp.destination(rootfs, "/app/", "/", srcs, "COPY")
    cp.copy_sources(ctx, srcs, rootfs, dest, as_dir, cp.CopyOptions())
    for rel, (data, mode, mtime) in want.items():
        got = rootfs / "app" / rel
        st = os.lstat(got)
        assert (got.read_bytes(), st.st_mode & 0o7777, st.st_mtime_ns) == (data, mode, mtime), rel
        assert XATTR_NAME.encode() not in xattr.list(str(got)), rel  # context files belong to 0:0


def test_file_dest_rules(ctx, tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    one = cp.select(ctx, ["top.c"], "COPY")
    for dest, expect in [("/etc/", "etc/top.c"), ("/etc", "etc/top.c"), ("/new.c", "new.c")]:
        d, as_dir = cp.destination(rootfs, dest, "/", one, "COPY")
        cp.copy_sources(ctx, one, rootfs, d, as_dir, cp.CopyOptions())
        assert (rootfs / expect).read_text() == "int main(){}"
        with pytest.raises(OSError):
            xattr.get(str(rootfs / expect), XATTR_NAME)  # context files belong to 0:0
    two = cp.select(ctx, ["top.c", "other.c"], "COPY")
    with pytest.raises(BuildError, match="must be a directory and end with a /"):
        cp.destination(rootfs, "/newdir", "/", two, "COPY")


def test_dest_symlink_is_followed_inside_the_rootfs_only(ctx, tmp_path):
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    os.symlink("/../../", rootfs / "up")
    one = cp.select(ctx, ["top.c"], "COPY")
    d, as_dir = cp.destination(rootfs, "/up/x.c", "/", one, "COPY")
    cp.copy_sources(ctx, one, rootfs, d, as_dir, cp.CopyOptions())
    assert (rootfs / "x.c").exists()
    assert not (tmp_path / "x.c").exists()


def test_add_archive_is_extracted(ctx, tmp_path):
    arch = ctx / "a.tar.gz"
    with tarfile.open(arch, "w:gz") as tf:
        tf.add(ctx / "top.c", arcname="dir/top.c")
    assert cp.is_archive(arch) and not cp.is_archive(ctx / "top.c")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    cp.extract_archive(arch, rootfs, "/opt")
    assert (rootfs / "opt/dir/top.c").read_text() == "int main(){}"


def test_mount_point_leaves_no_trace(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "run").mkdir(parents=True)
    os.utime(rootfs / "run", ns=(10**9, 10**9))
    undo = cp.mount_point(rootfs, "/run/secrets/tok", is_dir=False)
    assert (rootfs / "run/secrets/tok").is_file()
    undo()
    assert os.listdir(rootfs / "run") == []
    assert (rootfs / "run").stat().st_mtime_ns == 10**9
