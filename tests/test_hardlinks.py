"""Hard links of every kind of non-directory (a symlink's second name made with `ln -P`,
a FIFO's, a device placeholder's, a file's) survive repack -> unpack as one inode, with
umoci-py and with umoci 0.4.7."""

from __future__ import annotations

import os
import subprocess

from umoci_py_helpers import top_layer, umoci, umoci_py

DEVICE_XATTR = "user.orca.device"
# first name -> second name, in the new directory /links
PAIRS = {"sym": "sym-again", "fifo": "fifo-again", "dev": "dev-again", "file": "file-again"}


def test_hard_links_of_every_kind_survive_repack_and_unpack(busybox_layout, tmp_path):
    umoci_py("unpack", "--rootless", "--image", f"{busybox_layout}:latest", tmp_path / "b")
    root = tmp_path / "b/rootfs"
    links = root / "links"
    links.mkdir()
    os.symlink("../bin/busybox", links / "sym")
    os.mkfifo(links / "fifo")
    (links / "dev").write_bytes(b"")
    os.setxattr(links / "dev", DEVICE_XATTR, b"c 1 3")  # as runrootless' mknod leaves it
    (links / "file").write_text("data")
    for first, second in PAIRS.items():
        subprocess.run(["ln", "-P", links / first, links / second], check=True)
    # A name in an unchanged lower directory: its group changed, so it is written too.
    subprocess.run(["ln", "-P", links / "sym", root / "etc/sym-in-etc"], check=True)
    assert os.lstat(links / "sym").st_nlink == 3
    umoci_py("repack", "--image", f"{busybox_layout}:links", tmp_path / "b")

    layer = top_layer(busybox_layout, "links")
    # The first name in path order carries the inode, the others link to it.
    assert layer["etc/sym-in-etc"].issym() and layer["links/dev"].ischr() and layer["links/fifo"].isfifo()
    assert {name: layer[name].linkname for name in layer if layer[name].islnk()} == {
        "links/sym": "etc/sym-in-etc", "links/sym-again": "etc/sym-in-etc",
        "links/dev-again": "links/dev", "links/fifo-again": "links/fifo", "links/file-again": "links/file"}

    for run, bundle in ((umoci_py, "ours"), (umoci, "theirs")):
        run("unpack", "--rootless", "--image", f"{busybox_layout}:links", tmp_path / bundle)
        got = tmp_path / bundle / "rootfs"
        for first, second in PAIRS.items():
            a, b = os.lstat(got / "links" / first), os.lstat(got / "links" / second)
            want = 3 if first == "sym" else 2
            assert (a.st_ino, a.st_nlink, b.st_nlink) == (b.st_ino, want, want), (bundle, first)
        assert os.lstat(got / "etc/sym-in-etc").st_ino == os.lstat(got / "links/sym").st_ino
        assert os.readlink(got / "links/sym-again") == "../bin/busybox"
