"""Helpers shared by the umoci-py tests: run the CLI, read layers, snapshot trees."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import xattr

from umoci_py import refs
from umoci_py.cas import Layout

OWNER_XATTR = "user.rootlesscontainers"
UMOCI_PY = [sys.executable, "-m", "umoci_py.cli"]


def umoci_py(*args, check=True, env=None) -> subprocess.CompletedProcess:
    """Run our CLI the way a user does: a separate process, real exit status."""
    proc = subprocess.run([*UMOCI_PY, *map(str, args)],
                          capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"umoci-py {args} failed ({proc.returncode}): {proc.stderr}")
    return proc


def umoci(*args, check=True) -> subprocess.CompletedProcess:
    """The real umoci 0.4.7."""
    proc = subprocess.run(["umoci", *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"umoci {args} failed ({proc.returncode}): {proc.stderr}")
    return proc


def umoci_unpack(layout: Path, tag: str, bundle: Path) -> None:
    """The real umoci's rootless unpack of layout:tag into bundle."""
    umoci("unpack", "--rootless", "--image", f"{layout}:{tag}", bundle)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 1, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / digest.replace(":", "/")


def read_blob_json(layout: Path, digest: str) -> dict:
    return json.loads(blob_path(layout, digest).read_bytes())


def manifest_of(layout: Path, tag: str) -> dict:
    index = json.loads((layout / "index.json").read_bytes())
    entries = [m for m in index["manifests"]
               if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag]
    assert len(entries) == 1, entries
    return read_blob_json(layout, entries[0]["digest"])


def config_of(layout: Path, tag: str) -> dict:
    return read_blob_json(layout, manifest_of(layout, tag)["config"]["digest"])


def layer_members(layout: Path, descriptor: dict) -> list[tarfile.TarInfo]:
    """Headers of a layer blob, decompressed by its media type."""
    data = blob_path(layout, descriptor["digest"]).read_bytes()
    if descriptor["mediaType"].endswith("+gzip"):
        data = gzip.decompress(data)
    elif descriptor["mediaType"].endswith("+zstd"):
        import zstandard
        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    import io
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return tar.getmembers()


def top_layer(layout: Path, tag: str) -> dict[str, tarfile.TarInfo]:
    layers = manifest_of(layout, tag)["layers"]
    return {m.name.rstrip("/"): m for m in layer_members(layout, layers[-1])}


def _open_up(path: Path) -> list[tuple[str, int]]:
    """Give ourselves read access under a rootless tree; returns modes to restore."""
    changed = []
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o400
            if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & want != want:
                changed.append((full, stat.S_IMODE(st.st_mode)))
                os.chmod(full, stat.S_IMODE(st.st_mode) | want)
    return changed


def tree_snapshot(root: Path) -> dict[str, tuple]:
    """path -> (type, mode, size, content digest or link target, owner xattr, hardlink group).

    Mode-000 entries are opened up to be read and then restored, so the
    snapshot records the original modes.
    """
    restore = _open_up(root)
    try:
        out = {}
        inodes: dict[int, str] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, root)
                st = os.lstat(full)
                kind = stat.S_IFMT(st.st_mode)
                mode = stat.S_IMODE(st.st_mode)
                for path, old in restore:
                    if path == full:
                        mode = old
                if stat.S_ISLNK(st.st_mode):
                    content = os.readlink(full)
                elif stat.S_ISREG(st.st_mode):
                    with open(full, "rb") as f:
                        content = hashlib.sha256(f.read()).hexdigest()
                else:
                    content = ""
                try:
                    owner = xattr.get(full, OWNER_XATTR, nofollow=True).hex()
                except OSError:
                    owner = ""
                group = ""
                if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    group = inodes.setdefault(st.st_ino, rel)
                size = st.st_size if not stat.S_ISDIR(st.st_mode) else 0
                out[rel] = (kind, mode, size, content, owner, group)
        return out
    finally:
        for path, mode in reversed(restore):
            os.chmod(path, mode)


def layout_snapshot(layout: Path) -> dict[str, str]:
    """Every file of a layout with its content digest (to prove nothing changed)."""
    out = {}
    for dirpath, _, filenames in os.walk(layout):
        for name in filenames:
            full = Path(dirpath) / name
            out[str(full.relative_to(layout))] = hashlib.sha256(full.read_bytes()).hexdigest()
    return out


def check_layout(path) -> list[str]:
    """Every tag resolves and every blob below it verifies; returns the tags."""
    layout = Layout.open(path)
    tags = refs.list_tags(layout)
    for tag in tags:
        manifest = layout.read_json(refs.resolve(layout, tag)[-1], "manifest")
        layout.read_json(manifest["config"], "config")
        for layer in manifest["layers"]:
            with layout.open_blob(layer["digest"], layer["size"]) as f:
                while f.read(1 << 20):
                    pass
    return tags


def validate_layout(layout, tmp_path):
    """oci-image-tool on each tag alone: its --ref filter misreports "not unique" when
    index.json holds more than two tags, so each tag gets a one-entry view of the layout."""
    index = json.loads((layout / "index.json").read_bytes())
    assert index["manifests"]
    for i, entry in enumerate(index["manifests"]):
        view = tmp_path / f"view{i}"
        view.mkdir()
        (view / "oci-layout").write_bytes((layout / "oci-layout").read_bytes())
        (view / "blobs/sha256").mkdir(parents=True)  # hard links: it refuses a symlinked blobs/
        for blob in (layout / "blobs/sha256").iterdir():
            os.link(blob, view / "blobs/sha256" / blob.name)
        (view / "index.json").write_text(json.dumps({**index, "manifests": [entry]}))
        tag = entry["annotations"]["org.opencontainers.image.ref.name"]
        # This version calls the layout type "image" ("imageLayout" is unimplemented).
        proc = subprocess.run(["oci-image-tool", "validate", "--type", "image",
                               "--ref", f"name={tag}", str(view)], capture_output=True, text=True)
        assert proc.returncode == 0, (tag, proc.stdout, proc.stderr)
