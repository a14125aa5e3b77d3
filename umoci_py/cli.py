"""`umoci-py`: umoci's command line over the umoci_py library.

Every failure is one line on stderr and exit status 1, as with umoci's
log.Fatalf.
"""

from __future__ import annotations

import errno
import logging
import sys
from pathlib import Path

import click

from umoci_py import bundle as bundle_files
from umoci_py import config_ops, image_stat, jsonenc, refs
from umoci_py.cas import Layout
from umoci_py.errors import UmociError, UsageError
from umoci_py.mutate import HistoryOptions, check_created
from umoci_py.repack import repack_bundle
from umoci_py.unpack import InflateLimit, unpack_bundle, unpack_rootfs

VERSION = "0.1.0"
IMAGE_SPEC_VERSION = "1.1.0"
ALIASES = {"rm": "remove", "ls": "list", "config": "runtime-config"}


class AliasGroup(click.Group):
    """umoci's command aliases (rm, ls; `raw config`)."""

    def __init__(self, *args, aliases=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.aliases = aliases or {}

    def get_command(self, ctx, cmd_name):
        return (super().get_command(ctx, cmd_name)
                or super().get_command(ctx, self.aliases.get(cmd_name, "")))


# --- shared flags ---------------------------------------------------------

def _image_option(f):
    return click.option("--image", required=True, metavar="PATH[:TAG]",
                        help="OCI image layout and tag (default tag: latest)")(f)


def _layout_option(f):
    return click.option("--layout", required=True, metavar="PATH", help="OCI image layout")(f)


def _platform_option(f):
    return click.option("--platform", "platform", metavar="OS/ARCH[/VARIANT]",
                        help="pick one image of a multi-platform index")(f)


def _remap_options(f):
    f = click.option("--rootless", is_flag=True, help="unprivileged: keep owners in xattrs")(f)
    f = click.option("--gid-map", multiple=True, metavar="CONTAINER:HOST[:SIZE]")(f)
    return click.option("--uid-map", multiple=True, metavar="CONTAINER:HOST[:SIZE]")(f)


def _inflate_limit(ratio: int, floor: int) -> InflateLimit:
    return InflateLimit(ratio, floor, "raise --inflate-ratio or --inflate-floor to allow it")


def _inflate_options(f):
    default = InflateLimit()
    f = click.option("--inflate-floor", type=click.IntRange(0), default=default.floor, show_default=True,
                     envvar="UMOCI_PY_INFLATE_FLOOR", metavar="BYTES",
                     help="a layer may always inflate to this many bytes")(f)
    return click.option("--inflate-ratio", type=click.IntRange(1), default=default.ratio, show_default=True,
                        envvar="UMOCI_PY_INFLATE_RATIO", metavar="N",
                        help="beyond the floor, refuse a layer inflating to more than N x its blob size")(f)


def _history_options(f):
    f = click.option("--no-history", is_flag=True, help="add no history entry")(f)
    for name in ("author", "comment", "created", "created_by"):
        f = click.option(f"--history.{name}", f"history_{name}", metavar="VALUE")(f)
    return f


def _compress_option(f):
    return click.option("--compress", type=click.Choice(["auto", "gzip", "zstd", "none"]),
                        default="auto", show_default=True, help="layer compression")(f)


def _tag_option(f):
    return click.option("--tag", "new_tag", metavar="TAG",
                        help="tag for the result (default: overwrite the --image tag)")(f)


def _open_image(image: str) -> tuple[Layout, str]:
    path, tag = refs.parse_image_arg(image)
    return Layout.open(path), tag


def _open_layout(path: str) -> Layout:
    refs.check_layout_arg(path)
    return Layout.open(path)


def _platform(value):
    return refs.parse_platform(value) if value else None


def _history(kw) -> HistoryOptions:
    values = {n: kw.pop(f"history_{n}") for n in ("author", "comment", "created", "created_by")}
    no_history = kw.pop("no_history")
    if no_history and any(v is not None for v in values.values()):
        raise UsageError("--no-history cannot be combined with --history.* flags")
    if values["created"] is not None:
        check_created(values["created"], "--history.created")
    return HistoryOptions(no_history=no_history, **values)


def _maps(kw):
    return bundle_files.map_options(kw.pop("rootless"), kw.pop("uid_map"), kw.pop("gid_map"))


# --- commands ------------------------------------------------------------

@click.group(cls=AliasGroup, aliases=ALIASES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, "-v", "--version", prog_name="umoci-py",
                      message=f"%(prog)s version %(version)s\nimage spec: {IMAGE_SPEC_VERSION}"
                              f"\nruntime spec: {bundle_files.RUNTIME_SPEC_VERSION}")
@click.option("--verbose", is_flag=True, help="alias for --log=info")
@click.option("--log", "log_level", type=click.Choice(["debug", "info", "warn", "error", "fatal"]))
def cli(verbose, log_level):
    """umoci-py - umoci modifies Open Container images (no privileges needed)"""
    if verbose and log_level:
        raise UsageError("--verbose and --log are mutually exclusive")
    level = "info" if verbose else (log_level or "warn")
    names = {"warn": "WARNING", "fatal": "CRITICAL"}
    logging.basicConfig(level=names.get(level, level.upper()), format="%(levelname)s %(message)s")


@cli.command("init")
@_layout_option
def init_cmd(layout):
    """Create a new OCI layout."""
    refs.check_layout_arg(layout)
    Layout.init(layout)


@cli.command("new")
@_image_option
def new_cmd(image):
    """Create an empty image (no layers) for the host platform."""
    layout, tag = _open_image(image)
    config_ops.new_image(layout, tag)


@cli.command("unpack")
@_image_option
@click.option("--keep-dirlinks", is_flag=True, help="follow symlinks to directories like rsync -K")
@_remap_options
@_platform_option
@_inflate_options
@click.argument("bundle", type=click.Path(path_type=Path))
def unpack_cmd(image, keep_dirlinks, platform, bundle, inflate_ratio, inflate_floor, **kw):
    """Unpack an image into a runtime bundle."""
    layout, tag = _open_image(image)
    unpack_bundle(layout, tag, bundle, _maps(kw), keep_dirlinks, _platform(platform),
                  _inflate_limit(inflate_ratio, inflate_floor))


@cli.command("repack")
@_image_option
@click.option("--mask-path", multiple=True, metavar="PATH", help="ignore changes under PATH")
@click.option("--no-mask-volumes", is_flag=True, help="include changes inside Config.Volumes")
@click.option("--refresh-bundle", is_flag=True, help="make the bundle point at the new image")
@_history_options
@_compress_option
@click.argument("bundle", type=click.Path(path_type=Path))
def repack_cmd(image, mask_path, no_mask_volumes, refresh_bundle, compress, bundle, **kw):
    """Create a new image layer from the changes in a bundle."""
    layout, tag = _open_image(image)
    repack_bundle(layout, tag, bundle, mask_path, not no_mask_volumes, refresh_bundle,
                  _history(kw), compress)


def _kv_map(values, flag) -> dict[str, str]:
    return dict(config_ops.split_kv(v, flag) for v in values)


@cli.command("config")
@_image_option
@_tag_option
@_history_options
@_platform_option
@click.option("--clear", multiple=True, metavar="KEY", help=", ".join(config_ops.CLEAR_KEYS))
@click.option("--config.user", "user")
@click.option("--config.exposedports", "exposed_ports", multiple=True)
@click.option("--config.env", "env", multiple=True)
@click.option("--config.entrypoint", "entrypoint", multiple=True)
@click.option("--config.cmd", "cmd", multiple=True)
@click.option("--config.volume", "volumes", multiple=True)
@click.option("--config.label", "labels", multiple=True)
@click.option("--config.workingdir", "working_dir")
@click.option("--config.stopsignal", "stop_signal")
@click.option("--created")
@click.option("--author")
@click.option("--platform.os", "--os", "os_")
@click.option("--platform.arch", "--architecture", "architecture")
@click.option("--platform.variant", "variant")
@click.option("--manifest.annotation", "annotations", multiple=True)
def config_cmd(image, new_tag, platform, clear, entrypoint, cmd, labels, annotations, os_,
               created, **kw):
    """Change the configuration of an image."""
    history = _history(kw)
    if created is not None:
        check_created(created, "--created")
    changes = config_ops.ConfigChanges(
        clear=list(clear), entrypoint=list(entrypoint) if entrypoint else None,
        cmd=list(cmd) if cmd else None, labels=_kv_map(labels, "--config.label"),
        annotations=_kv_map(annotations, "--manifest.annotation"), os=os_, created=created,
        exposed_ports=list(kw.pop("exposed_ports")), env=list(kw.pop("env")),
        volumes=list(kw.pop("volumes")), **kw)
    layout, tag = _open_image(image)
    config_ops.change_config(layout, tag, changes, history, new_tag, _platform(platform))


@cli.command("tag")
@_image_option
@click.argument("new_tag")
def tag_cmd(image, new_tag):
    """Add a tag naming the same image as --image."""
    layout, tag = _open_image(image)
    config_ops.tag_image(layout, tag, new_tag)


@cli.command("remove")
@_image_option
def remove_cmd(image):
    """Remove a tag (a missing tag is not an error)."""
    layout, tag = _open_image(image)
    refs.remove_tag(layout, tag)


@cli.command("list")
@_layout_option
def list_cmd(layout):
    """List the tags of a layout, in index.json order."""
    for tag in refs.list_tags(_open_layout(layout)):
        click.echo(tag)


@cli.command("stat")
@_image_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@_platform_option
def stat_cmd(image, as_json, platform):
    """Show the manifest, config and history of an image."""
    layout, tag = _open_image(image)
    info = image_stat.stat(layout, tag, platform=_platform(platform))
    if as_json:
        sys.stdout.buffer.write(jsonenc.dumps(info))
    else:
        click.echo(image_stat.format_stat(info), nl=False)


@cli.command("gc")
@_layout_option
def gc_cmd(layout):
    """Delete blobs no index entry reaches."""
    refs.gc(_open_layout(layout))


@cli.command("insert")
@_image_option
@_tag_option
@click.option("--whiteout", is_flag=True, help="delete TARGET instead of adding SOURCE")
@click.option("--opaque", is_flag=True, help="hide what lower layers have under TARGET")
@_remap_options
@_history_options
@_compress_option
@_platform_option
@click.argument("paths", nargs=-1, required=True)
def insert_cmd(image, new_tag, whiteout, opaque, compress, platform, paths, **kw):
    """Add SOURCE at TARGET as a new layer: insert [SOURCE] TARGET."""
    if len(paths) > 2:
        raise UsageError("insert takes <source> <target>, or <target> with --whiteout")
    source, target = (None, paths[0]) if len(paths) == 1 else paths
    opts, history = _maps(kw), _history(kw)
    layout, tag = _open_image(image)
    config_ops.insert(layout, tag, source, target, opts, history, whiteout, opaque, new_tag,
                      compress, _platform(platform))


@cli.group("raw", cls=AliasGroup, aliases=ALIASES)
def raw_group():
    """Low-level operations."""


@raw_group.command("add-layer")
@_image_option
@_tag_option
@_history_options
@_compress_option
@_platform_option
@click.argument("tar", type=click.Path(path_type=Path))
def raw_add_layer_cmd(image, new_tag, compress, platform, tar, **kw):
    """Append an uncompressed tar as a new layer."""
    history = _history(kw)
    layout, tag = _open_image(image)
    config_ops.raw_add_layer(layout, tag, tar, history, new_tag, compress, _platform(platform))


@raw_group.command("runtime-config")
@_image_option
@click.option("--rootfs", type=click.Path(path_type=Path), help="resolve users through its /etc")
@_remap_options
@_platform_option
@click.argument("config", type=click.Path(path_type=Path))
def raw_runtime_config_cmd(image, rootfs, platform, config, **kw):
    """Write the runtime config.json for an image."""
    layout, tag = _open_image(image)
    config_ops.raw_runtime_config(layout, tag, config, _maps(kw), rootfs, _platform(platform))


@raw_group.command("unpack")
@_image_option
@click.option("--keep-dirlinks", is_flag=True)
@_remap_options
@_platform_option
@_inflate_options
@click.argument("rootfs", type=click.Path(path_type=Path))
def raw_unpack_cmd(image, keep_dirlinks, platform, rootfs, inflate_ratio, inflate_floor, **kw):
    """Unpack only the root filesystem of an image."""
    layout, tag = _open_image(image)
    unpack_rootfs(layout, tag, rootfs, _maps(kw), keep_dirlinks, _platform(platform),
                  _inflate_limit(inflate_ratio, inflate_floor))


@raw_group.command("mtree-validate")
@click.option("-f", "--manifest", "--file", "manifest", required=True,
              type=click.Path(path_type=Path))
@click.option("-p", "--path", "path", required=True, type=click.Path(path_type=Path))
@click.option("-K", "--add-keywords", multiple=True)
@click.option("-k", "--use-keywords", multiple=True)
@click.option("--umoci-keywords", is_flag=True)
@click.option("--rootless", is_flag=True)
def mtree_validate_cmd(manifest, path, add_keywords, use_keywords, umoci_keywords, rootless):
    """Compare a tree against an mtree manifest; exit 1 on differences."""
    deltas = config_ops.validate_tree(manifest, path, _split_keywords(use_keywords),
                                 _split_keywords(add_keywords), umoci_keywords, rootless)
    for delta in deltas:
        click.echo(f"{delta.path}: {delta.kind}")
    if deltas:
        sys.exit(1)


def _split_keywords(values) -> list[str]:
    return [k for v in values for k in v.split(",") if k]


def _message(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, OSError) and err.errno in (errno.EPERM, errno.EACCES):
        text += " (maybe --rootless will help?)"
    return text


def main(argv=None) -> None:
    try:
        cli.main(args=argv, prog_name="umoci-py", standalone_mode=False)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)
    except click.exceptions.Abort:
        click.echo("umoci-py: aborted", err=True)
        sys.exit(1)
    except (UmociError, click.ClickException, OSError) as err:
        message = err.format_message() if isinstance(err, click.ClickException) else _message(err)
        click.echo(f"umoci-py: {message}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
