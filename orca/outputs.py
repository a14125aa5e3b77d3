"""Build outputs, as `docker buildx build -o/--output`, `--push` and `--load` name them.

  type=oci,dest=F       an OCI image layout as a tar (F or `-`, stdout)
  type=oci,dest=D,tar=false   the same layout as a directory
  type=docker,dest=F    that tar plus docker's manifest.json, which `docker load` reads
  type=docker           (no dest), --load: the image into the output layout, tagged
  type=local,dest=D     the final stage's files in D (`-o D` for short)
  type=tar,dest=F       the final stage's files as one tar (`-o -`: to stdout)
  type=image,name=N[,push=true]   the image into the layout as N, pushed if asked
  type=registry,name=N  type=image,push=true
  type=cacheonly        nothing (the build only fills the cache)

Every file or directory output appears whole or not at all: it is written
beside its destination and renamed into place.  The exporters read the built
image from a layout (its manifest descriptor), so they do not depend on how
the build ran.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from umoci_py.atomicfile import atomic_file
from umoci_py.cas import Layout
from umoci_py.errors import UmociError
from umoci_py.unpriv import current_umask, remove_tree

from orca.errors import OrcaError

# tarfile and the layer code are imported by the exporters that use them:
# the CLI imports this module on every build, and start-up time is most of a
# no-change rebuild.

TYPES = ("oci", "docker", "local", "tar", "image", "registry", "cacheonly")
_KEYS = {
    "oci": {"dest", "name", "tar"},
    "docker": {"dest", "name", "tar"},
    "local": {"dest"},
    "tar": {"dest"},
    "image": {"name", "push"},
    "registry": {"name", "push"},
    "cacheonly": set(),
}
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


class OutputError(OrcaError):
    """An --output that cannot be understood or written."""


@dataclass(frozen=True)
class Output:
    """One -o value (or --load, --push), parsed."""
    type: str
    dest: str | None = None           # a path, or "-" for stdout
    names: tuple[str, ...] = ()       # image names; empty: the build's -t tags
    push: bool = False
    tar: bool = True                  # oci/docker: a tar (else a layout directory)
    text: str = ""                    # as given, for messages


@dataclass
class Delivery:
    """What the build must do for its outputs: whether the image goes into the
    output layout and under which tags, what to export, what to push."""
    load: bool
    tags: list[str] = field(default_factory=list)
    exports: list[Output] = field(default_factory=list)
    push: list[str] = field(default_factory=list)


def parse_output(text: str) -> Output:
    """One -o value: `type=T,key=value,...` (CSV, so `"name=a,b"` names two), `DIR`, or `-`."""
    import csv  # for -o values only

    if text == "-":
        return Output("tar", "-", text=text)
    if "=" not in text:
        return Output("local", text, text=text)
    try:
        fields = next(csv.reader([text]))
    except (csv.Error, StopIteration):
        raise OutputError(f"--output {text!r}: not a comma-separated list of key=value") from None
    attrs: dict[str, str] = {}
    for item in fields:
        key, eq, value = item.partition("=")
        if not eq:
            raise OutputError(f"--output {text!r}: {item!r} is not key=value")
        attrs[key.strip().lower()] = value
    kind = attrs.pop("type", None) or ("tar" if attrs.get("dest") == "-" else "local")
    if kind not in TYPES:
        raise OutputError(f"--output {text!r}: unknown type {kind!r} (one of {', '.join(TYPES)})")
    unknown = sorted(set(attrs) - _KEYS[kind])
    if unknown:
        raise OutputError(f"--output {text!r}: type={kind} does not take {', '.join(unknown)}")
    names = tuple(n.strip() for n in attrs.get("name", "").split(",") if n.strip())
    out = Output(kind, attrs.get("dest") or None, names, _flag(attrs, "push", text), _flag(attrs, "tar", text, True),
                 text)
    if kind == "registry":
        out = Output("image", out.dest, out.names, True, out.tar, text)
    if kind in ("local", "tar") and not out.dest:
        raise OutputError(f"--output {text!r}: type={kind} needs dest=")
    if kind == "oci" and not out.dest:
        raise OutputError(f"--output {text!r}: type=oci needs dest= (a file, or - for stdout)")
    if out.dest == "-" and (kind == "local" or not out.tar):
        raise OutputError(f"--output {text!r}: a directory cannot go to stdout")
    return out


def _flag(attrs: dict, key: str, text: str, default: bool = False) -> bool:
    value = attrs.get(key, "").lower()
    if not value:
        return default
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise OutputError(f"--output {text!r}: {key}={attrs[key]!r}: expected true or false")


def plan(outputs: list[Output], tags: list[str], load: bool, push: bool) -> Delivery:
    """buildx's rules: no output means the image into the layout (as docker's
    builder loads it); --load is type=docker without dest; --push is
    type=registry for every -t; image outputs default to the -t names."""
    outputs = list(outputs)
    if load:
        outputs.append(Output("docker", text="--load"))
    if push:
        if not tags:
            raise OutputError("--push: no -t/--tag to push to")
        outputs.append(Output("image", names=tuple(tags), push=True, text="--push"))
    if not outputs:
        return Delivery(load=True, tags=list(tags))
    out = Delivery(load=False)
    for o in outputs:
        named = list(o.names or tags)
        if o.type == "image" or (o.type == "docker" and not o.dest):
            out.load = True
            out.tags += [n for n in named if n not in out.tags]
            if o.push:
                if not named:
                    raise OutputError(f"--output {o.text}: push=true needs name= or -t")
                out.push += [n for n in named if n not in out.push]
        elif o.type != "cacheonly":
            out.exports.append(o if o.names else Output(o.type, o.dest, tuple(tags), o.push, o.tar, o.text))
    _check_names(out.push)
    stdout = [o.text for o in out.exports if o.dest == "-"]
    if len(stdout) > 1:
        raise OutputError(f"--output: {' and '.join(stdout)} both write to stdout")
    return out


def export(layout: Layout, desc: dict, out: Output, stdout=None) -> None:
    """Write the image `desc` of `layout` as the file or directory output `out`."""
    try:
        if out.type in ("oci", "docker"):
            if out.tar:
                with _atomic_file(out.dest, stdout) as f:
                    write_archive(layout, desc, f, out.names, docker=out.type == "docker")
            else:
                with _atomic_dir(out.dest, merge=False) as d:
                    write_layout_dir(layout, desc, d, out.names, docker=out.type == "docker")
        elif out.type == "local":
            with _atomic_dir(out.dest, merge=True) as d:
                unpack_files(layout, desc, d)
        elif out.type == "tar":
            with _atomic_file(out.dest, stdout) as f:
                write_files_tar(layout, desc, f)
        else:
            raise OutputError(f"--output {out.text}: type={out.type} is not a file output")
    except OSError as err:
        raise OutputError(f"--output {out.text}: {err.filename or out.dest}: {err.strerror}") from None


# -- image archives -----------------------------------------------------------

def _index(desc: dict, names: tuple[str, ...]) -> dict:
    """index.json: one entry per name (as containerd's export), or one bare entry."""
    base = {k: desc[k] for k in ("mediaType", "digest", "size")}
    given = desc.get("annotations") or {}  # --annotation manifest-descriptor:K=V
    if given:
        base["annotations"] = dict(given)
    entries = []
    for name in names:
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
        entries.append({**base, "annotations": {**given, "io.containerd.image.name": name,
                                                "org.opencontainers.image.ref.name": tag}})
    return {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries or [base]}


def _archive_members(layout: Layout, desc: dict, names: tuple[str, ...], docker: bool):
    """(name, bytes or blob descriptor) of an OCI layout holding the image; with
    docker, also docker's manifest.json naming the same blobs, which docker
    load reads (layers may be compressed: load inflates them)."""
    manifest = layout.read_json(desc, "manifest")
    blobs = [manifest["config"], *manifest["layers"]]
    yield "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
    yield "index.json", json.dumps(_index(desc, names)).encode()
    if docker:
        entry = {"Config": _blob_name(manifest["config"]), "RepoTags": [_docker_tag(n) for n in names],
                 "Layers": [_blob_name(d) for d in manifest["layers"]]}
        yield "manifest.json", json.dumps([entry]).encode()
    seen = set()
    for d in [desc, *blobs]:
        if d["digest"] not in seen:
            seen.add(d["digest"])
            yield _blob_name(d), d


def _blob_name(desc: dict) -> str:
    algo, _, hexd = desc["digest"].partition(":")
    return f"blobs/{algo}/{hexd}"


def _docker_tag(name: str) -> str:
    """docker names an untagged reference NAME:latest."""
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


def write_archive(layout: Layout, desc: dict, f, names: tuple[str, ...], docker: bool = False) -> None:
    import tarfile

    with tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        dirs = set()
        for name, content in _archive_members(layout, desc, names, docker):
            for parent in _parents(name):
                if parent not in dirs:
                    dirs.add(parent)
                    tar.addfile(_info(parent, 0, is_dir=True))
            if isinstance(content, bytes):
                tar.addfile(_info(name, len(content)), io.BytesIO(content))
            else:
                with layout.open_blob(content["digest"], content["size"]) as blob:
                    tar.addfile(_info(name, content["size"]), blob)


def write_layout_dir(layout: Layout, desc: dict, d: Path, names: tuple[str, ...], docker: bool = False) -> None:
    for name, content in _archive_members(layout, desc, names, docker):
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            with layout.open_blob(content["digest"], content["size"]) as blob, open(path, "wb") as dst:
                while chunk := blob.read(1 << 20):
                    dst.write(chunk)


def _parents(name: str) -> list[str]:
    parts = name.split("/")[:-1]
    return ["/".join(parts[:i + 1]) for i in range(len(parts))]


def _info(name: str, size: int, is_dir: bool = False):
    import tarfile

    ti = tarfile.TarInfo(name)
    ti.type, ti.size = (tarfile.DIRTYPE if is_dir else tarfile.REGTYPE), size
    ti.mode = 0o755 if is_dir else 0o644
    ti.mtime = 0  # the archive's bytes depend on the image only
    return ti


# -- the final stage's files --------------------------------------------------

def unpack_files(layout: Layout, desc: dict, d: Path) -> None:
    """The image's files into the empty directory d (owners in the rootless xattr)."""
    from umoci_py.unpack import unpack_manifest
    unpack_manifest(layout, desc, d, _rootless())


def write_files_tar(layout: Layout, desc: dict, f) -> None:
    """One tar of the image's files, with their owners from the image."""
    from umoci_py.layer.generate import generate_insert_layer

    with _scratch_dir(Path(tempfile.gettempdir())) as d:
        unpack_files(layout, desc, d / "rootfs")
        generate_insert_layer(d / "rootfs", "/", _rootless(), f)


def _rootless():
    """Owners go to and come from the rootless xattr: no privileges needed."""
    from umoci_py.layer.idmap import MapOptions
    return MapOptions(rootless=True, uid_map=[], gid_map=[])


# -- writing atomically --------------------------------------------------------

@contextlib.contextmanager
def _scratch_dir(where: Path):
    d = Path(tempfile.mkdtemp(prefix=".orca-output-", dir=where))
    try:
        yield d
    finally:
        remove_tree(d)


@contextlib.contextmanager
def _atomic_file(dest: str, stdout=None):
    if dest == "-":
        stream = stdout or sys.stdout.buffer
        if stream.isatty():
            raise OutputError("--output: will not write a tar to a terminal (redirect stdout, or give dest=FILE)")
        yield stream
        stream.flush()
        return
    with atomic_file(dest, 0o666 & ~current_umask()) as f:
        yield f


@contextlib.contextmanager
def _atomic_dir(dest: str, merge: bool):
    """A directory filled beside dest, then renamed to it.  With merge (as
    BuildKit's local exporter, which writes into an existing directory),
    an existing dest keeps what the output does not replace; else an
    existing non-empty dest is refused."""
    path = Path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    exists = path.is_dir() and not path.is_symlink()
    if os.path.lexists(path) and not exists:
        raise OutputError(f"--output: {path}: exists and is not a directory")
    if exists and any(path.iterdir()) and not merge:
        raise OutputError(f"--output: {path}: exists and is not empty")
    with _scratch_dir(path.parent) as scratch:
        tree = scratch / "out"
        tree.mkdir()
        yield tree
        if exists:
            _merge(tree, path)
        else:
            os.chmod(tree, 0o777 & ~current_umask())
            os.rename(tree, path)


def _merge(src: Path, dest: Path) -> None:
    """Move src's entries into dest, replacing what is in the way; directories
    on both sides are merged.  Each move is one rename."""
    for entry in sorted(os.listdir(src)):
        s, d = src / entry, dest / entry
        if d.is_dir() and not d.is_symlink() and s.is_dir() and not s.is_symlink():
            _merge(s, d)
            continue
        if d.is_dir() and not d.is_symlink():
            remove_tree(d)
        elif os.path.lexists(d) and s.is_dir() and not s.is_symlink():
            os.unlink(d)  # rename() puts a directory over an empty directory only
        # moving a directory to another parent rewrites its "..": it must be writable
        mode = s.lstat().st_mode
        writable = not s.is_dir() or s.is_symlink() or mode & 0o200
        if not writable:
            os.chmod(s, mode | 0o200)
        os.replace(s, d)
        if not writable:
            os.chmod(d, mode & 0o7777)


def deliver(layout: Layout, desc: dict, delivery: Delivery, client=None, stdout=None) -> None:
    """The file and directory exports, then the pushes (each -t / name=)."""
    for out in delivery.exports:
        export(layout, desc, out, stdout)
    if delivery.push:
        from orca.registry.push import push
        from orca.registry.reference import parse

        for name in delivery.push:
            push(client, layout, desc, parse(name))


def _check_names(names: list[str]) -> None:
    """Names to push must be references (checked before the build runs)."""
    from orca.registry.reference import parse
    for name in names:
        try:
            parse(name)
        except UmociError as err:
            raise OutputError(f"{name}: {err}") from None
