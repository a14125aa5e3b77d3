"""Registry credentials and the authentication handshake.

Credentials are read where podman and skopeo read them ($REGISTRY_AUTH_FILE,
${XDG_RUNTIME_DIR}/containers/auth.json, $XDG_CONFIG_HOME/containers/auth.json)
and then where docker does (~/.docker/config.json); the first file naming the
registry wins.  A Credential never shows its secret in repr/str, and nothing
here logs, so secrets cannot leak into output, images or cache records.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from umoci_py import jsonload

from orca.registry.errors import RegistryError

_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/")


@dataclass(frozen=True)
class Credential:
    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def __str__(self) -> str:
        return f"Credential({self.username})"


def auth_files(env: dict[str, str] | None = None) -> list[Path]:
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        files.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    files.append(Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "containers" / "auth.json")
    files.append(Path(env.get("DOCKER_CONFIG") or home / ".docker") / "config.json")
    return files


def _keys_for(registry: str, repository: str) -> list[str]:
    """Entry names to look for, most specific first (podman allows host/namespace keys)."""
    parts = repository.split("/")
    keys = [f"{registry}/{'/'.join(parts[:i])}" for i in range(len(parts), 0, -1)]
    keys.append(registry)
    if registry == "docker.io":
        keys += list(_HUB_KEYS)
    return keys


def _normalise(key: str) -> str:
    return re.sub(r"^https?://", "", key).rstrip("/")


def find_credential(registry: str, repository: str, files: list[Path]) -> Credential | None:
    for path in files:
        try:
            doc = jsonload.load(path, RegistryError, "cannot read registry credentials", dict)
        except FileNotFoundError:
            continue
        auths = {(_normalise(k) if not k.startswith("https://index.docker.io") else k): v
                 for k, v in (doc.get("auths") or {}).items()}
        for key in _keys_for(registry, repository):
            entry = auths.get(key)
            if entry is None:
                continue
            return _decode(entry, path, key)
    return None


def _decode(entry: dict, path: Path, key: str) -> Credential:
    if entry.get("username") and entry.get("password"):
        return Credential(entry["username"], entry["password"])
    try:
        user, sep, password = base64.b64decode(entry.get("auth", ""), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        sep = ""
    if not sep:
        raise RegistryError(f"{path}: entry {key!r}: \"auth\" is not base64 of user:password")
    return Credential(user, password)


_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="..."` -> ("bearer", {realm, service, ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
              for m in _PARAM.finditer(rest)}
    return scheme.lower(), params
