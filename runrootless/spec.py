"""RunSpec: what to run and where; read from an OCI bundle's config.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from umoci_py import jsonload
from umoci_py.errors import BundleError

# Destinations the sandbox always provides itself (see sandbox.py).
PROVIDED = frozenset({"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
                      "/sys/fs/cgroup", "/etc/resolv.conf", "/etc/hosts"})


# Room for thousands of threads; far below a shared machine's pid space (32768 by default).
DEFAULT_MAX_TASKS = 4096


@dataclass(frozen=True)
class Mount:
    source: str
    destination: str
    type: str = "bind"
    options: tuple[str, ...] = ("rbind", "ro")


@dataclass
class RunSpec:
    rootfs: Path
    args: list[str]
    env: list[str]
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    mounts: tuple[Mount, ...] = ()
    hostname: str = "runrootless"
    extra_hosts: tuple[tuple[str, str], ...] = ()   # (name, address) lines added to /etc/hosts
    network: str = "host"
    emulate: bool = True
    # Live processes and threads, zombies included, past which fork/clone fail
    # with EAGAIN (enforced by the tracer, so only with emulation; 0: none).
    max_tasks: int = DEFAULT_MAX_TASKS


def spec_from_bundle(bundle_dir) -> RunSpec:
    bundle = Path(bundle_dir)
    path = bundle / "config.json"
    try:
        config = jsonload.load(path, BundleError, "cannot read runtime config", dict)
    except FileNotFoundError:
        raise BundleError(f"{path}: no such file (not a runtime bundle?)") from None
    try:
        process = config["process"]
        args = [str(a) for a in process["args"]]
        root = config["root"]["path"]
        user = process.get("user", {})
        mounts = tuple(
            Mount(str(bundle / m["source"]) if m.get("type", "bind") == "bind" and not m["source"].startswith("/")
                  else m.get("source", ""),
                  m["destination"], m.get("type", "bind"), tuple(m.get("options", ())))
            for m in config.get("mounts", ()) if m["destination"].rstrip("/") not in PROVIDED)
        spec = RunSpec(
            rootfs=(bundle / root).resolve(),
            args=args,
            env=[str(e) for e in process.get("env", ())],
            cwd=process.get("cwd", "/"),
            uid=int(user.get("uid", 0)),
            gid=int(user.get("gid", 0)),
            additional_gids=tuple(int(g) for g in user.get("additionalGids", ())),
            mounts=mounts,
            hostname=config.get("hostname") or "runrootless",
            network="none" if any(ns.get("type") == "network" and not ns.get("path")
                                  for ns in config.get("linux", {}).get("namespaces", ())) else "host",
            max_tasks=_pids_limit(config),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(f"{path}: malformed runtime config: missing or bad {err}") from None
    if not args:
        raise BundleError(f"{path}: process.args is empty")
    if not spec.rootfs.is_dir():
        raise BundleError(f"{path}: root.path {spec.rootfs} is not a directory")
    return spec


def _pids_limit(config: dict) -> int:
    """linux.resources.pids.limit when positive; runc's 0 or -1 (no limit) keeps our default bound."""
    pids = ((config.get("linux") or {}).get("resources") or {}).get("pids") or {}
    limit = int(pids.get("limit") or 0)
    return limit if limit > 0 else DEFAULT_MAX_TASKS
