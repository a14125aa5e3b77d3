"""Image references: `[host[:port]/]repo[:tag][@digest]` with Docker Hub normalisation.

`debian` means docker.io/library/debian:latest, as docker, podman and skopeo
read it; the first path component is a registry host only when it contains a
dot or a colon or is `localhost`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from umoci_py import digest as digestmod

from orca.registry.errors import RegistryError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
# compiled on first use (re's cache): every build imports this module, few parse a reference
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[\w][\w.-]{0,127}"
_HOST = (r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?"
         r"|\[[0-9a-fA-F:]+\](?::[0-9]+)?")


@dataclass(frozen=True)
class Reference:
    """An image reference, normalised as docker reads it."""
    registry: str          # as written (docker.io for Docker Hub), host[:port]
    repository: str        # library/debian
    tag: str | None = None
    digest: str | None = None

    @property
    def host(self) -> str:
        """Where the API lives (Docker Hub's API host differs from its name)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def with_reference(self, tag: str | None = None, digest: str | None = None) -> "Reference":
        return Reference(self.registry, self.repository, tag, digest)

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def looks_remote(text: str) -> bool:
    """Does `text` name a registry host explicitly (so it is never a layout tag)?"""
    first, slash, _ = text.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


def parse(text: str) -> Reference:
    """Parse and normalise an image reference; RegistryError names the bad part."""
    rest = text
    if rest.startswith("docker://"):
        rest = rest[len("docker://"):]
    if not rest or any(c.isspace() for c in text):
        raise RegistryError(f"image reference {text!r}: empty or contains spaces")
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not digestmod.is_valid(digest):
            raise RegistryError(f"image reference {text!r}: bad digest {digest!r} (want sha256:<64 hex>)")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not re.fullmatch(_TAG, tag):
            raise RegistryError(f"image reference {text!r}: bad tag {tag!r}")
    if looks_remote(rest):
        registry, path = rest.split("/", 1)
        if not re.fullmatch(_HOST, registry):
            raise RegistryError(f"image reference {text!r}: bad registry host {registry!r}")
    else:
        registry, path = DOCKER_HUB, rest
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in path:
        path = "library/" + path
    for comp in path.split("/"):
        if not re.fullmatch(_COMPONENT, comp):
            raise RegistryError(f"image reference {text!r}: bad repository name {path!r} "
                                "(lowercase letters, digits and . _ - separators)")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, path, tag, digest)
