"""`orca-build`: build a Dockerfile into an OCI layout, and manage the build cache.

`orca-build [OPTIONS] CONTEXT` builds (the `build` command is the default);
`orca-build cache ls` lists cache records; `orca-build prune` empties the cache (or
trims its layer snapshots to limits);
`orca-build pull REF` / `orca-build push TAG REF` move images to and from registries.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from umoci_py.errors import UmociError

from orca.progress import MODES

# The engine, the cache and the registry code are imported inside the commands
# that use them: start-up time is most of a no-change rebuild.

# One instance of each parameter type for every option: click looks up each
# type's translated name (gettext, a few file look-ups) as it is made.
PATH = click.Path(path_type=Path)
FILE = click.Path(path_type=Path, dir_okay=False)


class DefaultGroup(click.Group):
    """A group whose unknown first word means `build`, so `orca-build CONTEXT` works."""

    def parse_args(self, ctx, args):
        if not args or args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["build", *args]
        return super().parse_args(ctx, args)

    def main(self, args=None, prog_name=None, **extra):
        """Usage errors as one line, like every other error (no usage text)."""
        extra["standalone_mode"] = False
        try:
            code = super().main(args, prog_name, **extra)
        except click.exceptions.Abort:
            click.echo("orca-build: aborted", err=True)
            sys.exit(1)
        except click.ClickException as err:
            click.echo(f"orca-build: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        if isinstance(code, int) and code:  # --help and --version end with click's Exit
            sys.exit(code)


def registry_options(fn):
    fn = click.option("--tls-ca", "tls_ca", multiple=True, type=FILE,
                      help="extra CA certificates (PEM) trusted for registries, on top of the system's")(fn)
    return click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]",
                        help="speak plain HTTP to this registry")(fn)


def registry_client(tls_ca, insecure):
    from orca.registry.client import Client, RegistryOptions

    return _run(lambda: Client(RegistryOptions(tls_ca=tuple(tls_ca), insecure=frozenset(insecure))))


# flags parsed into typed values by click (callbacks), before the build reads them

def parse_build_args(_ctx, _param, values) -> dict[str, str]:
    out = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not key:
            raise click.BadParameter(f"{item!r}: expected K[=V]", param_hint="--build-arg")
        if not eq:  # K alone takes the value from the environment, as docker does
            if key not in os.environ:
                continue
            value = os.environ[key]
        out[key] = value
    return out


def parse_secrets(_ctx, _param, values) -> dict[str, Path]:
    out = {}
    for item in values:
        fields = dict(p.partition("=")[::2] for p in item.split(","))
        sid, src = fields.get("id"), fields.get("src") or fields.get("source")
        if not sid or not src:
            raise click.BadParameter(f"{item!r}: expected id=ID,src=PATH", param_hint="--secret")
        if not os.path.isfile(src):
            raise click.BadParameter(f"{item!r}: {src}: no such file", param_hint="--secret")
        out[sid] = Path(src)
    return out


def parse_ssh(_ctx, _param, values) -> dict[str, Path]:
    """--ssh ID[=SOCKET]: the agent socket of each id ($SSH_AUTH_SOCK when
    none is named), as docker buildx takes it."""
    if not values:
        return {}
    from orca.sshforward import check_agent_socket  # its socket code, only for --ssh

    out = {}
    for item in values:
        sid, eq, path = item.partition("=")
        if not sid or (eq and not path) or "," in path:
            raise click.BadParameter(f"{item!r}: expected default|ID[=SOCKET] (one agent socket)",
                                     param_hint="--ssh")
        if not eq:
            path = os.environ.get("SSH_AUTH_SOCK", "")
            if not path:
                raise click.BadParameter(f"{item!r}: SSH_AUTH_SOCK is not set (name the socket: "
                                         f"{sid}=SOCKET)", param_hint="--ssh")
        out[sid] = _run(lambda: check_agent_socket(path, f"--ssh {item}"))
    return out


def buildx_options(fn):
    """docker buildx build's flags for the image's metadata and the RUN sandbox."""
    options = [
        click.option("-q", "--quiet", is_flag=True, help="print only the image digest (as --progress quiet)"),
        click.option("--iidfile", type=FILE, help="write the image digest here"),
        click.option("--metadata-file", type=FILE,
                     help="write the build's result here as JSON (containerimage.digest, ...)"),
        click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="add a label to the image config"),
        click.option("--annotation", "annotations", multiple=True, metavar="[KIND:]KEY=VALUE",
                     help="annotate the manifest (KIND manifest, manifest-descriptor or index)"),
        click.option("--pull", is_flag=True, help="take a base named NAME[:TAG] from its registry, "
                                                  "never from the layout"),
        click.option("--no-cache-filter", "no_cache_filter", multiple=True, metavar="STAGE",
                     help="run the steps of this stage, ignoring the cache"),
        click.option("--network", default=None, type=click.Choice(["default", "none", "host"]),
                     help="network of RUN steps without --network"),
        click.option("--add-host", "add_hosts", multiple=True, metavar="NAME:IP", help="add a line to RUN's /etc/hosts"),
        click.option("--shm-size", default=None, metavar="SIZE", help="size of RUN's /dev/shm (e.g. 128m)"),
        click.option("--ulimit", "ulimits", multiple=True, metavar="NAME=SOFT[:HARD]", help="resource limit of RUN"),
        click.option("--ssh", "ssh", multiple=True, metavar="default|ID[=SOCKET]", callback=parse_ssh,
                     help="forward an ssh-agent socket to RUN --mount=type=ssh (default: $SSH_AUTH_SOCK)"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


cache_dir_option = click.option("--cache-dir", type=PATH, default=None,
                                 help="build cache directory (default $XDG_CACHE_HOME/orca)")


def output_options(fn):
    fn = click.option("--load", is_flag=True, help="also write the image into the layout when -o is given")(fn)
    fn = click.option("--push", is_flag=True, help="push every -t to its registry (type=registry)")(fn)
    return click.option("-o", "--output", "outputs", multiple=True,
                        metavar="type=TYPE[,dest=PATH][,name=N][,push=true]",
                        help="oci, docker, local, tar, image, registry or cacheonly; "
                             "DIR means type=local, - means type=tar to stdout")(fn)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rootless-oci-tools", prog_name="orca-build",
                      message="%(prog)s version %(version)s")
def cli():
    """Build OCI images from Dockerfiles with no privileges."""


@cli.command()
@click.option("-f", "--file", "dockerfile", type=PATH, default=None,
              help="Dockerfile (default CONTEXT/Dockerfile; - reads it from stdin)")
@click.option("-t", "--tag", "tags", multiple=True, help="tag the result in the layout (NAME[:TAG])")
@click.option("--layout", type=PATH, default=None,
              help="output OCI layout (default $XDG_DATA_HOME/orca/layout)")
@click.option("--build-arg", "build_args", multiple=True, metavar="K[=V]", callback=parse_build_args)
@click.option("--target", default=None, help="stage to build (default the last)")
@click.option("--no-cache", is_flag=True, help="run every step, ignoring the cache")
@click.option("--secret", "secrets", multiple=True, metavar="id=ID,src=PATH", callback=parse_secrets)
@click.option("--platform", default=None, help="os/arch[/variant] (only the host's)")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="stages run at once (default: CPUs)")
@click.option("--progress", "progress_mode", type=click.Choice(MODES), default="auto",
              help="plain: numbered step log; quiet: only the digest; auto: a live view on a terminal, else plain")
@cache_dir_option
@output_options
@click.option("--cache-to", default=None, metavar="type=local,dest=DIR|type=registry,ref=REF",
              help="export the build cache (also registry:REF; ,mode=max for every stage's steps)")
@click.option("--cache-from", multiple=True, metavar="type=local,src=DIR|type=registry,ref=REF",
              help="read a build cache exported by --cache-to (also registry:REF)")
@click.option("--build-context", "build_contexts", multiple=True,
              metavar="NAME=DIR|oci-layout://PATH[:TAG]|docker-image://REF",
              help="what FROM NAME and COPY --from=NAME read")
@registry_options
@buildx_options
@click.argument("context", type=PATH)
def build(**flags):
    """Build the Dockerfile in CONTEXT (-: a tar of the context, or a Dockerfile, on stdin)."""
    from orca.buildflags import build_and_export

    result, delivery = _run(lambda: build_and_export(sys.stdin.buffer, sys.stderr, **flags),
                            output_shown=not flags["quiet"] and flags["progress_mode"] != "quiet")
    if not any(o.dest == "-" for o in delivery.exports):  # stdout may be the output itself
        click.echo(result.descriptor["digest"])


def _run(fn, output_shown: bool = False):
    """The one error sink: a line on stderr and exit status 1.  A failed
    step's last output lines follow it unless the progress showed them."""
    try:
        return fn()
    except UmociError as err:
        click.echo(f"orca-build: {err}", err=True)
        if not output_shown:
            for line in getattr(err, "output", ()):
                click.echo(f"  {line}", err=True)
    except OSError as err:  # what no layer of the build turned into its own message
        where = f"{err.filename}: " if err.filename else ""
        click.echo(f"orca-build: {where}{err.strerror or err}", err=True)
    sys.exit(1)


@cli.command("pull")
@click.option("--layout", type=PATH, default=None,
              help="OCI layout to pull into (default $XDG_DATA_HOME/orca/layout)")
@click.option("-t", "--tag", default=None, help="tag in the layout (default the reference's tag)")
@click.option("--platform", default=None, help="os/arch[/variant] (default the host's)")
@registry_options
@click.argument("ref")
def pull_cmd(layout, tag, platform, tls_ca, insecure, ref):
    """Pull REF ([host[:port]/]repo[:tag|@digest]) from its registry into a layout."""
    from umoci_py import refs
    from orca.buildflags import default_layout
    from orca.registry.pull import pull_to_layout

    client = registry_client(tls_ca, insecure)
    plat = _run(lambda: refs.parse_platform(platform) if platform else refs.host_platform())
    pulled = _run(lambda: pull_to_layout(client, ref, layout or default_layout(), tag, plat))
    click.echo(pulled.descriptor["digest"])


@cli.command("push")
@click.option("--layout", type=PATH, default=None,
              help="OCI layout holding TAG (default $XDG_DATA_HOME/orca/layout)")
@registry_options
@click.argument("tag")
@click.argument("ref")
def push_cmd(layout, tls_ca, insecure, tag, ref):
    """Push tag TAG of the layout to the registry reference REF."""
    from orca.buildflags import default_layout
    from orca.registry.push import push_tag

    client = registry_client(tls_ca, insecure)
    pushed = _run(lambda: push_tag(client, layout or default_layout(), tag, ref))
    click.echo(pushed.digest)


@cli.group()
def cache():
    """Inspect the build cache."""


@cache.command("ls")
@cache_dir_option
def cache_ls(cache_dir):
    """List cached steps (key, age, instruction)."""
    from orca.cache import CacheStore, default_cache_dir

    store = _run(lambda: CacheStore(cache_dir or default_cache_dir()))
    for rec in store.list():
        size = sum(d["size"] for d in rec["image"]["layers"][-1:])
        click.echo(f"{rec['key'][7:19]}  {size:>10}  {rec['description']}")


def _size(_ctx, _param, value):
    from orca.snapstore import parse_size
    try:
        return None if value is None else parse_size(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _until(_ctx, _param, values):
    from orca.snapstore import parse_duration
    until = None
    for value in values:
        key, _, text = value.partition("=")
        if key != "until":
            raise click.BadParameter(f"{value!r}: the only filter is until=DURATION")
        try:
            until = parse_duration(text)
        except ValueError as err:
            raise click.BadParameter(str(err)) from None
    return until


@cli.command()
@cache_dir_option
@click.option("--keep-storage", callback=_size, metavar="SIZE",
              help="remove least recently used layer snapshots until the rest fit in SIZE (e.g. 10GB)")
@click.option("--filter", "until", multiple=True, callback=_until, metavar="until=DURATION",
              help="remove layer snapshots unused for DURATION (e.g. 24h)")
@click.option("--all", "everything", is_flag=True, help="remove everything (the default without limits)")
def prune(cache_dir, keep_storage, until, everything):
    """Remove the build cache: every record, blob, cache mount and layer
    snapshot no running build uses; with --keep-storage or --filter, only
    the layer snapshots past those limits."""
    from orca.cache import CacheStore, default_cache_dir

    store = _run(lambda: CacheStore(cache_dir or default_cache_dir()))
    if (keep_storage is not None or until is not None) and not everything:
        snaps, freed = _run(lambda: store.prune_snapshots(keep_storage, until))
        click.echo(f"removed {snaps} layer snapshots ({freed} bytes)")
        return
    snaps, freed = _run(lambda: store.prune_snapshots())
    records, blobs = _run(store.prune)
    click.echo(f"removed {records} cache records, {blobs} blobs and {snaps} layer snapshots ({freed} bytes)")


def main():
    if os.environ.get("ORCA_SNAPSHOTTER", "auto") != "copy":
        # Before any thread starts: builds mount overlayfs in it (orca.userns).
        from orca import userns
        userns.enter()
    cli(prog_name="orca-build")

