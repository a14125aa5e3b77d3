"""The sandbox settings every RUN of a build gets, from docker buildx's flags:
--network (the default of RUN --network), --ulimit, --shm-size, --add-host."""

from __future__ import annotations

import ipaddress
import re
import resource
from dataclasses import dataclass

from orca.errors import OrcaError

NETWORKS = ("default", "none", "host")

RLIMIT_LOCKS = 10  # <asm-generic/resource.h>; Python's resource module lacks it

# docker's --ulimit names (moby/go-units ulimit.go)
ULIMITS = {
    "as": resource.RLIMIT_AS, "core": resource.RLIMIT_CORE, "cpu": resource.RLIMIT_CPU,
    "data": resource.RLIMIT_DATA, "fsize": resource.RLIMIT_FSIZE, "locks": RLIMIT_LOCKS,
    "memlock": resource.RLIMIT_MEMLOCK, "msgqueue": resource.RLIMIT_MSGQUEUE, "nice": resource.RLIMIT_NICE,
    "nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC, "rss": resource.RLIMIT_RSS,
    "rtprio": resource.RLIMIT_RTPRIO, "rttime": resource.RLIMIT_RTTIME,
    "sigpending": resource.RLIMIT_SIGPENDING, "stack": resource.RLIMIT_STACK,
}

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True)
class Ulimit:
    """One --ulimit: docker's name of the limit, soft and hard values."""
    name: str
    soft: int
    hard: int

    @property
    def resource(self) -> int:
        return ULIMITS[self.name]


@dataclass(frozen=True)
class RunSettings:
    """The sandbox settings every RUN of the build gets."""
    network: str = "default"                    # for RUN without --network
    ulimits: tuple[Ulimit, ...] = ()
    shm_size: int | None = None                 # bytes of /dev/shm; None: runrootless's 64 MiB
    add_hosts: tuple[tuple[str, str], ...] = ()  # (name, ip) lines for /etc/hosts

    def key(self) -> dict:
        """What of these a RUN's cache key holds: only what was set, so keys
        of builds without these flags stay as they were."""
        out = {}
        if self.ulimits:
            out["ulimits"] = [[u.name, u.soft, u.hard] for u in self.ulimits]
        if self.shm_size is not None:
            out["shm_size"] = self.shm_size
        if self.add_hosts:
            out["add_hosts"] = [list(h) for h in self.add_hosts]
        return out


def check_network(value: str) -> str:
    if value not in NETWORKS:
        raise OrcaError(f"--network {value}: expected one of {', '.join(NETWORKS)}")
    return value


def parse_ulimit(text: str) -> Ulimit:
    """``NAME=SOFT[:HARD]``.  Without privileges a hard limit can only be
    lowered, so one above the build's own is refused here, not in a RUN."""
    name, eq, values = text.partition("=")
    soft_text, _, hard_text = values.partition(":")
    if not eq or name not in ULIMITS:
        raise OrcaError(f"--ulimit {text}: expected NAME=SOFT[:HARD] with NAME one of {', '.join(sorted(ULIMITS))}")
    try:
        soft = int(soft_text)
        hard = int(hard_text) if hard_text else soft
    except ValueError:
        raise OrcaError(f"--ulimit {text}: limits are whole numbers") from None
    if soft < 0 or hard < 0 or soft > hard:
        raise OrcaError(f"--ulimit {text}: the soft limit must be between 0 and the hard limit")
    _, own_hard = resource.getrlimit(ULIMITS[name])
    if own_hard != resource.RLIM_INFINITY and hard > own_hard:
        raise OrcaError(f"--ulimit {text}: the hard limit cannot be raised above {own_hard} "
                        "without privileges")
    return Ulimit(name, soft, hard)


def parse_size(text: str, what: str) -> int:
    """docker's sizes: bytes, or a number with b, k, m, g or t (powers of 1024)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?", text.strip().lower())
    if not match:
        raise OrcaError(f"{what} {text}: expected a size such as 64m or 1g")
    size = int(float(match.group(1)) * _UNITS[match.group(2)])
    if size <= 0:
        raise OrcaError(f"{what} {text}: must be more than 0")
    return size


def parse_add_host(text: str) -> tuple[str, str]:
    """``NAME:IP`` (or ``NAME=IP``, as buildx also takes); IPv6 addresses keep their colons."""
    sep = "=" if "=" in text else ":"
    name, _, ip = text.partition(sep)
    try:
        ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        raise OrcaError(f"--add-host {text}: expected NAME:IP") from None
    if not name or any(c.isspace() for c in name):
        raise OrcaError(f"--add-host {text}: expected NAME:IP")
    return name, ip.strip("[]")


def from_flags(network: str | None, ulimits, shm_size: str | None, add_hosts) -> RunSettings:
    return RunSettings(network=check_network(network or "default"),
                       ulimits=tuple(parse_ulimit(u) for u in ulimits),
                       shm_size=parse_size(shm_size, "--shm-size") if shm_size else None,
                       add_hosts=tuple(parse_add_host(h) for h in add_hosts))
