"""Build contexts other than a plain directory, as `docker buildx build` takes them.

  --build-context NAME=DIR                  a directory (its own .dockerignore applies)
  --build-context NAME=oci-layout://PATH[:TAG]   a tag (default latest) of an OCI layout
  --build-context NAME=docker-image://REF   an image in a registry
`FROM NAME`, `COPY --from=NAME` and `RUN --mount=from=NAME` then read it
(a stage of that name is still the stage).  The context `-` is stdin: a
tar of the context (plain, gzip, bzip2 or xz), or a bare Dockerfile
with an empty context.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

from umoci_py.unpriv import remove_tree

from orca.errors import BuildError

KINDS = ("dir", "oci-layout", "docker-image")


@dataclass(frozen=True)
class NamedContext:
    name: str
    kind: str          # one of KINDS
    value: str         # the directory, the layout path or the image reference
    tag: str = "latest"  # oci-layout only


def parse_build_context(text: str) -> NamedContext:
    name, eq, value = text.partition("=")
    what = f"--build-context {text!r}"
    if not eq or not name or not value:
        raise BuildError(f"{what}: expected NAME=DIR|oci-layout://PATH[:TAG]|docker-image://REF")
    if value.startswith("docker-image://"):
        return NamedContext(name, "docker-image", value[len("docker-image://"):])
    if value.startswith("oci-layout://"):
        path, _, tag = value[len("oci-layout://"):].partition(":")
        if "@" in path:
            raise BuildError(f"{what}: oci-layout by digest is not supported, name a tag")
        return NamedContext(name, "oci-layout", path, tag or "latest")
    if "://" in value or value.startswith("git@"):
        raise BuildError(f"{what}: only a directory, oci-layout:// and docker-image:// are supported "
                         "(no git or HTTP contexts)")
    if not Path(value).is_dir():
        raise BuildError(f"{what}: {value}: not a directory")
    return NamedContext(name, "dir", value)


def parse_build_contexts(values) -> dict[str, NamedContext]:
    out = {}
    for text in values:
        ctx = parse_build_context(text)
        out[ctx.name] = ctx
    return out


@contextlib.contextmanager
def stdin_context(data: bytes, workroot: Path):
    """The context `-`: yields (directory, Dockerfile text or None).  A tar is
    extracted (with the layer extractor: no entry lands outside the
    directory) into a temporary directory removed afterwards."""
    import tarfile

    from umoci_py.errors import UmociError
    from umoci_py.layer.extract import extract_layer
    from umoci_py.layer.idmap import MapOptions

    d = Path(tempfile.mkdtemp(prefix="stdin-context-", dir=workroot))
    try:
        raw = _decompress(data)
        if _is_tar(raw):
            try:
                extract_layer(io.BytesIO(raw), d, MapOptions(rootless=True, uid_map=[], gid_map=[]))
            except (tarfile.TarError, OSError, UmociError) as err:
                raise BuildError(f"context on stdin: not a readable tar: {err}") from None
            yield d, None
        else:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise BuildError("context on stdin: neither a tar nor a UTF-8 Dockerfile") from None
            yield d, text
    finally:
        remove_tree(d)


def _decompress(data: bytes) -> bytes:
    import bz2
    import gzip
    import lzma

    for magic, fn in ((b"\x1f\x8b", gzip.decompress), (b"BZh", bz2.decompress), (b"\xfd7zXZ\x00", lzma.decompress)):
        if data.startswith(magic):
            try:
                return fn(data)
            except (OSError, EOFError, ValueError, lzma.LZMAError) as err:
                raise BuildError(f"context on stdin: corrupt compressed data: {err}") from None
    return data


def _is_tar(data: bytes) -> bool:
    import tarfile

    if len(data) >= 512 and data[257:262] == b"ustar":
        return True
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:"):
            return True
    except tarfile.TarError:
        return False
