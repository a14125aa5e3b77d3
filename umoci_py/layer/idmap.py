"""How a layer's owners map between the container and the host (umoci's
--uid-map/--gid-map), for extraction and generation alike."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import LayerError


@dataclass(frozen=True)
class IdMap:
    container: int
    host: int
    size: int


@dataclass
class MapOptions:
    rootless: bool = False
    uid_map: list[IdMap] = field(default_factory=list)
    gid_map: list[IdMap] = field(default_factory=list)


def map_id(maps: list[IdMap], value: int, what: str, where: str, to_host: bool = True) -> int:
    """Container id -> host id (or back with to_host=False); identity without maps."""
    if not maps:
        return value
    for m in maps:
        src, dst = (m.container, m.host) if to_host else (m.host, m.container)
        if src <= value < src + m.size:
            return dst + value - src
    side = "" if to_host else "host "
    raise LayerError(f"{where}: {side}{what} {value} is not in the {what} map")
