"""OCI and Docker media types, and what they say about layers."""

from __future__ import annotations

from .errors import LayerError

OCI_LAYOUT_VERSION = "1.0.0"

DESCRIPTOR = "application/vnd.oci.descriptor.v1+json"
LAYOUT_HEADER = "application/vnd.oci.layout.header.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
EMPTY_JSON = "application/vnd.oci.empty.v1+json"

LAYER = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = LAYER + "+gzip"
LAYER_ZSTD = LAYER + "+zstd"
LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
LAYER_NONDIST_GZIP = LAYER_NONDIST + "+gzip"
LAYER_NONDIST_ZSTD = LAYER_NONDIST + "+zstd"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES = frozenset({INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset({CONFIG, DOCKER_CONFIG})

_LAYER_COMPRESSION = {
    LAYER: "none",
    LAYER_GZIP: "gzip",
    LAYER_ZSTD: "zstd",
    LAYER_NONDIST: "none",
    LAYER_NONDIST_GZIP: "gzip",
    LAYER_NONDIST_ZSTD: "zstd",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_FOREIGN_LAYER_GZIP: "gzip",
}


_OCI_NAME = {
    DOCKER_MANIFEST: MANIFEST,
    DOCKER_MANIFEST_LIST: INDEX,
    DOCKER_CONFIG: CONFIG,
    DOCKER_LAYER_GZIP: LAYER_GZIP,
    DOCKER_FOREIGN_LAYER_GZIP: LAYER_NONDIST_GZIP,
}


def oci_descriptor(descriptor: dict) -> dict:
    """The descriptor with a Docker media type replaced by its OCI name (the
    bytes are the same): a manifest we write must not mix the two families."""
    name = _OCI_NAME.get(descriptor.get("mediaType"))
    return {**descriptor, "mediaType": name} if name else descriptor


def is_layer(media_type: str) -> bool:
    return media_type in _LAYER_COMPRESSION


def layer_compression(media_type: str) -> str:
    """"gzip", "zstd" or "none"; LayerError for a media type that is no layer."""
    try:
        return _LAYER_COMPRESSION[media_type]
    except KeyError:
        raise LayerError(f"unsupported layer media type {media_type!r}") from None
