"""A layer unpacked as an overlayfs upper directory (umoci's OverlayfsRootfs
unpack; the format is described in umoci_py.layer.overlay): extraction whose
whiteouts become whiteout devices and opaque markers the opaque xattr."""

from __future__ import annotations

import os
import stat
import tarfile
from typing import BinaryIO

from ..errors import LayerError
from .extract import _Extractor
from .idmap import MapOptions
from .names import OPAQUE, WHITEOUT
from .overlay import OPAQUE_XATTR, PRIVATE_XATTR
from .tarstream import TarStream


class _UpperExtractor(_Extractor):
    """Extraction into an upper of its own: a whiteout entry becomes a
    whiteout device (Linux 5.8+ lets anyone make one), an opaque marker the
    opaque xattr on its directory.  Paths resolve within the upper only, so
    the layer must not reach through symlinks of its lowers (an overlay
    mount over the lowers is the way for those)."""

    bottom = False  # nothing below: whiteouts hide nothing and are dropped

    def whiteout(self, raw: str, dirname: str, base: str) -> None:
        name = base[len(WHITEOUT):]
        if not name or name in (".", ".."):
            raise LayerError(f"layer entry {raw!r}: invalid whiteout name")
        if self.bottom:
            super().whiteout(raw, dirname, base)  # within the layer only, as extraction does
            return
        parent = self.resolve_dir(dirname, create=True)
        self.touch_dir(parent)
        if base == OPAQUE:
            os.setxattr(self.host(parent), OPAQUE_XATTR, b"y", follow_symlinks=False)
            return
        rel = f"{parent}/{name}" if parent else name
        if os.path.lexists(self.host(rel)):
            if rel in self.upper:
                return  # this layer's own entry: the whiteout hides the lowers' only
            self.remove(rel, os.lstat(self.host(rel)))
        os.mknod(self.host(rel), stat.S_IFCHR, os.makedev(0, 0))

    def xattrs(self, ti: tarfile.TarInfo, rel: str) -> dict[str, bytes]:
        return {k: v for k, v in super().xattrs(ti, rel).items() if not k.startswith(PRIVATE_XATTR)}


def unpack_layer_as_upper(tar_stream: BinaryIO, upper: str | os.PathLike, opts: MapOptions,
                          bottom: bool = False) -> None:
    """Write the uncompressed layer tar as an overlay upper directory (umoci's
    OverlayfsRootfs unpack), to be mounted over the layers below it; bottom:
    there are none (a base layer), so its whiteouts apply within it alone."""
    extractor = _UpperExtractor(os.fspath(upper), opts, False, None)
    extractor.bottom = bottom
    extractor.run(TarStream(tar_stream))
