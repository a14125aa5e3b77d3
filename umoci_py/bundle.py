"""The runtime bundle beside an unpacked rootfs: config.json and umoci.json.

config.json follows umoci: runc's example spec, then the image config applied
over it (MutateRuntimeSpec), then the rootless adjustments (ToRootless) so that
``runc run`` works for an unprivileged user with one mapped id.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from umoci_py import jsonenc, jsonload, schemas, securejoin, unpriv
from umoci_py.errors import BundleError, UsageError
from umoci_py.layer.idmap import IdMap, MapOptions

CONFIG_JSON = "config.json"
UMOCI_JSON = "umoci.json"
ROOTFS = "rootfs"
RUNTIME_SPEC_VERSION = "1.0.2"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VOLUME_OPTIONS = ["rw", "nosuid", "nodev", "noexec", "relatime"]
ANNOTATION_PREFIX = "org.opencontainers.image."
_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def mtree_name(manifest_digest: str) -> str:
    """File name of the mtree manifest for a manifest digest ("sha256:<hex>")."""
    algorithm, _, hexpart = manifest_digest.partition(":")
    return f"{algorithm}_{hexpart}.mtree"


@dataclass
class ExecUser:
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    home: str | None = None  # only for a user found in the rootfs's passwd


def _read_db(rootfs: Path, name: str, min_fields: int) -> list[list[str]]:
    """Entries of a colon-separated passwd/group file of the rootfs; a missing
    file is empty.  Its symlinks resolve inside the rootfs, and a mode-000
    directory or file on the way is opened up for the read (unpriv)."""
    with unpriv.Access(str(rootfs)) as access:
        try:
            rel = securejoin.resolve(access.root, name, access)
            with unpriv.open_read(access, rel) as f:
                text = f.read().decode(errors="replace")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return []
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) >= min_fields:
            rows.append(parts)
    return rows


def _int_or_none(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def resolve_user(spec: str, rootfs: Path | None) -> ExecUser:
    """Resolve Config.User ("user[:group]", names or numbers) like moby/sys/user.

    Without a rootfs there are no databases: only numbers resolve and names
    fall back to root, as umoci does for ``raw runtime-config`` without --rootfs.
    """
    user_part, _, group_part = (spec or "").partition(":")
    if not user_part:
        user_part = "0"
    result = ExecUser()
    if rootfs is None:
        result.uid = _int_or_none(user_part) or 0
        result.gid = _int_or_none(group_part) or 0
        return result

    passwd = _read_db(rootfs, "etc/passwd", 7)
    uid_arg = _int_or_none(user_part)
    match = next((p for p in passwd if p[0] == user_part or
                  (uid_arg is not None and p[2] == user_part)), None)
    if match is not None:
        result.uid, result.gid, result.home = int(match[2]), int(match[3]), match[5]
        user_name = match[0]
    elif uid_arg is not None:
        result.uid, user_name = uid_arg, None
    else:
        raise BundleError(f"{rootfs / 'etc/passwd'}: no matching entries for user {user_part!r}")

    groups = _read_db(rootfs, "etc/group", 4)
    if group_part:
        gid_arg = _int_or_none(group_part)
        gmatch = next((g for g in groups if g[0] == group_part or
                       (gid_arg is not None and g[2] == group_part)), None)
        if gmatch is not None:
            result.gid = int(gmatch[2])
        elif gid_arg is not None:
            result.gid = gid_arg
        else:
            raise BundleError(f"{rootfs / 'etc/group'}: no matching entries for group {group_part!r}")
    elif user_name is not None:
        # Supplementary groups exist only in the implicit form, as in moby.
        result.additional_gids = [int(g[2]) for g in groups
                                  if user_name in g[3].split(",") and g[2].isdigit()]
    return result


def _example_spec() -> dict:
    """runc's example spec as umoci's Example() writes it (root, no user ns)."""
    return {
        "ociVersion": RUNTIME_SPEC_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [DEFAULT_PATH, "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(_CAPS) for k in
                             ("bounding", "effective", "inheritable", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": ROOTFS},
        "hostname": "umoci-default",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": ["/proc/kcore", "/proc/latency_stats", "/proc/timer_list",
                            "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq",
                              "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


def merge_env(base: list[str], extra: list[str]) -> list[str]:
    """Later entries replace earlier ones of the same name, keeping positions."""
    out = list(base)
    for entry in extra:
        name = entry.split("=", 1)[0]
        for i, old in enumerate(out):
            if old.split("=", 1)[0] == name:
                out[i] = entry
                break
        else:
            out.append(entry)
    return out


def _apply_image(spec: dict, image: dict, rootfs: Path | None) -> None:
    """umoci's MutateRuntimeSpec: the image config over the example spec."""
    if image.get("os") != "linux":
        raise BundleError(f"image os {image.get('os')!r} is not supported: only linux images can be run")
    cfg = image.get("config") or {}
    process = spec["process"]
    process["cwd"] = cfg.get("WorkingDir") or "/"
    process["env"] = merge_env(process["env"], cfg.get("Env") or [])
    args = (cfg.get("Entrypoint") or []) + (cfg.get("Cmd") or [])
    if args:
        process["args"] = args

    user = resolve_user(cfg.get("User", ""), rootfs)
    process["user"] = {"uid": user.uid, "gid": user.gid}
    if user.additional_gids:
        process["user"]["additionalGids"] = user.additional_gids
    # umoci 0.5+: HOME only from a passwd entry, and never over the image's own.
    if user.home is not None and not any(e.startswith("HOME=") for e in cfg.get("Env") or []):
        process["env"] = merge_env(process["env"], [f"HOME={user.home}"])

    for volume in sorted(cfg.get("Volumes") or {}):
        spec["mounts"].append({"destination": volume, "type": "tmpfs", "source": "none",
                               "options": list(VOLUME_OPTIONS)})

    annotations = {
        "os": image.get("os", ""),
        "architecture": image.get("architecture", ""),
        "variant": image.get("variant", ""),
        "author": image.get("author", ""),
        "created": image.get("created", ""),
        "stopSignal": cfg.get("StopSignal", ""),
        "exposedPorts": ",".join(sorted(cfg.get("ExposedPorts") or {})),
    }
    spec["annotations"] = {ANNOTATION_PREFIX + k: v for k, v in annotations.items() if v}
    spec["annotations"].update(cfg.get("Labels") or {})


def _locked_flags(path: str) -> list[str]:
    """Mount flags a user namespace may not clear on a bind of `path`."""
    try:
        flags = os.statvfs(path).f_flag
    except OSError:
        return []
    names = [(os.ST_NOSUID, "nosuid"), (os.ST_NODEV, "nodev"), (os.ST_NOEXEC, "noexec"),
             (os.ST_NOATIME, "noatime"), (os.ST_NODIRATIME, "nodiratime"),
             (os.ST_RELATIME, "relatime")]
    return [name for bit, name in names if flags & bit]


def _to_rootless(spec: dict) -> None:
    """umoci's ToRootless: what an unprivileged runc needs."""
    spec["process"]["user"].pop("additionalGids", None)
    linux = spec["linux"]
    linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] not in ("network", "user")]
    linux["namespaces"].append({"type": "user"})
    # umoci only replaces the mounts when the host has a resolv.conf to bind.
    if os.path.exists("/etc/resolv.conf"):
        mounts = []
        for mount in spec["mounts"]:
            if mount["destination"].startswith("/sys"):
                continue
            if "options" in mount:
                mount["options"] = [o for o in mount["options"]
                                    if not o.startswith(("uid=", "gid="))]
            mounts.append(mount)
        mounts.append({"destination": "/sys", "type": "bind", "source": "/sys",
                       "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
        mounts.append({"destination": "/etc/resolv.conf", "type": "bind",
                       "source": "/etc/resolv.conf",
                       "options": _locked_flags("/etc/resolv.conf") + ["rbind", "ro"]})
        spec["mounts"] = mounts
    linux.pop("resources", None)


def _id_maps(maps: list[IdMap]) -> list[dict]:
    return [{"containerID": m.container, "hostID": m.host, "size": m.size} for m in maps]


def runtime_config(image: dict, rootfs: Path | None, opts: MapOptions) -> dict:
    """The config.json umoci writes for an image config and id mapping."""
    spec = _example_spec()
    _apply_image(spec, image, rootfs)
    if opts.uid_map or opts.gid_map:
        linux = spec["linux"]
        linux["uidMappings"] = _id_maps(opts.uid_map)
        linux["gidMappings"] = _id_maps(opts.gid_map)
        linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != "user"]
        linux["namespaces"].append({"type": "user"})
    if opts.rootless:
        _to_rootless(spec)
    # Go's struct order puts mappings first inside "linux"; keep it readable.
    linux = spec["linux"]
    spec["linux"] = {k: linux[k] for k in ("uidMappings", "gidMappings", "resources",
                                           "namespaces", "maskedPaths", "readonlyPaths")
                     if k in linux}
    return spec


def write_runtime_config(path: Path, spec: dict) -> None:
    """Write config.json (tab-indented as umoci does); refuses to overwrite."""
    schemas.validate(spec, "runtime-config", str(path))
    with open(path, "x") as f:
        json.dump(spec, f, indent="\t")


def write_umoci_json(bundle: Path, descriptor_path: list[dict], opts: MapOptions) -> None:
    """umoci.json: where the rootfs came from and how ids were mapped."""
    doc = {
        "umoci_version": "2",
        "from_descriptor_path": {"descriptor_walk": descriptor_path},
        "map_options": {
            "uid_mappings": _id_maps(opts.uid_map) or None,
            "gid_mappings": _id_maps(opts.gid_map) or None,
            "rootless": opts.rootless,
        },
        # 0.4.7 refuses a file without it; HEAD accepts 0.
        "whiteout_mode": 0,
    }
    tmp = bundle / (UMOCI_JSON + ".tmp")
    tmp.write_bytes(jsonenc.dumps(doc))
    os.replace(tmp, bundle / UMOCI_JSON)


def read_umoci_json(bundle: Path) -> tuple[list[dict], MapOptions]:
    """(descriptor path, map options) recorded by unpack."""
    path = bundle / UMOCI_JSON
    try:
        doc = jsonload.load(path, BundleError, "cannot read")
    except FileNotFoundError:
        raise BundleError(f"{path}: missing: {bundle} is not an unpacked bundle") from None
    schemas.validate(doc, "umoci-json", str(path))
    if doc.get("umoci_version") != "2" or doc.get("whiteout_mode", 0) != 0:
        raise BundleError(f"{path}: unsupported umoci_version {doc.get('umoci_version')!r} "
                          f"or whiteout_mode {doc.get('whiteout_mode')!r}")
    walk = doc["from_descriptor_path"]["descriptor_walk"]
    if not walk:
        raise BundleError(f"{path}: empty descriptor_walk")
    mo = doc.get("map_options") or {}
    try:
        opts = MapOptions(
            rootless=bool(mo.get("rootless")),
            uid_map=[IdMap(m["containerID"], m["hostID"], m["size"]) for m in mo.get("uid_mappings") or []],
            gid_map=[IdMap(m["containerID"], m["hostID"], m["size"]) for m in mo.get("gid_mappings") or []],
        )
    except (KeyError, TypeError) as err:
        raise BundleError(f"{path}: bad map_options: {err}") from None
    return walk, opts


def check_bundle_free(bundle: Path) -> None:
    """umoci refuses to unpack over an existing bundle."""
    for name in (CONFIG_JSON, ROOTFS):
        if os.path.lexists(bundle / name):
            raise BundleError(f"{bundle / name}: already exists: refusing to unpack over a bundle")



def parse_idmap(text: str, flag: str) -> IdMap:
    """container:host[:size] (size defaults to 1), each a uint32."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise UsageError(f"{flag} {text!r}: expected container:host[:size] with decimal ids")
    values = [int(p) for p in parts] + ([1] if len(parts) == 2 else [])
    if any(v > 0xFFFFFFFF for v in values):
        raise UsageError(f"{flag} {text!r}: id out of uint32 range")
    return IdMap(*values)


def map_options(rootless: bool, uid_maps=(), gid_maps=()) -> MapOptions:
    """umoci's ParseIdmapOptions: --rootless without maps maps root to ourselves."""
    uid_map = [parse_idmap(m, "--uid-map") for m in uid_maps]
    gid_map = [parse_idmap(m, "--gid-map") for m in gid_maps]
    if rootless and not uid_map:
        uid_map = [IdMap(0, os.geteuid(), 1)]
    if rootless and not gid_map:
        gid_map = [IdMap(0, os.getegid(), 1)]
    return MapOptions(rootless=rootless, uid_map=uid_map, gid_map=gid_map)
