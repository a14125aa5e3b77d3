"""`orca-build`: build a Dockerfile into an OCI layout, and manage the build cache.

`orca-build [OPTIONS] CONTEXT` builds (the `build` command is the default);
`orca-build cache ls` lists cache records; `orca-build prune` empties the cache (or
trims its layer snapshots to limits);
`orca-build pull REF` / `orca-build push TAG REF` move images to and from registries.

Parsed with argparse, not click as umoci-py and runrootless are: click cost a fully cached apt-hello rebuild 7 ms of 78.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

from umoci_py.errors import UmociError

from orca.progress import MODES

# The engine, the cache and the registry code are imported inside the commands
# that use them: start-up time is most of a no-change rebuild.


class _Usage(Exception):
    """A bad command line: one line on stderr and exit status 2, as click's usage errors had."""


def _bad(option: str, message: str) -> _Usage:
    """click's words, kept: the flag quoted ('--jobs') by a value's own check, bare for a repeated flag's."""
    return _Usage(f"Invalid value for {option}: {message}")


class _Parser(argparse.ArgumentParser):
    """argparse raising its usage errors (no usage dump) and no option abbreviations, as click."""

    def __init__(self, **kw):
        super().__init__(allow_abbrev=False, **kw)

    def error(self, message):
        raise _Usage(message)


class _Version(argparse.Action):
    """--version, read from the package's metadata only when asked for."""

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import version
        print(f"orca-build version {version('rootless-oci-tools')}")
        parser.exit()


# single values checked as they are read (an exception argparse lets through, with click's words)

def _file(option: str):
    def check(value: str) -> Path:
        if os.path.isdir(value):
            raise _bad(f"'{option}'", f"File '{value}' is a directory.")
        return Path(value)
    return check


def _choice(option: str, choices):
    def check(value: str) -> str:
        if value not in choices:
            raise _bad(f"'{option}'", f"{value!r} is not one of {', '.join(map(repr, choices))}.")
        return value
    return check


def _jobs(value: str) -> int:
    try:
        jobs = int(value)
    except ValueError:
        raise _bad("'--jobs'", f"{value!r} is not a valid integer range.") from None
    if jobs < 1:
        raise _bad("'--jobs'", f"{jobs} is not in the range x>=1.")
    return jobs


def _size(value: str) -> int:
    from orca.snapstore import parse_size
    try:
        return parse_size(value)
    except ValueError as err:
        raise _bad("'--keep-storage'", str(err)) from None


# repeated flags turned into typed values once all are read, before the command reads them

def parse_build_args(values) -> dict[str, str]:
    out = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not key:
            raise _bad("--build-arg", f"{item!r}: expected K[=V]")
        if not eq:  # K alone takes the value from the environment, as docker does
            if key not in os.environ:
                continue
            value = os.environ[key]
        out[key] = value
    return out


def parse_secrets(values) -> dict[str, Path]:
    out = {}
    for item in values:
        fields = dict(p.partition("=")[::2] for p in item.split(","))
        sid, src = fields.get("id"), fields.get("src") or fields.get("source")
        if not sid or not src:
            raise _bad("--secret", f"{item!r}: expected id=ID,src=PATH")
        if not os.path.isfile(src):
            raise _bad("--secret", f"{item!r}: {src}: no such file")
        out[sid] = Path(src)
    return out


def parse_ssh(values) -> dict[str, Path]:
    """--ssh ID[=SOCKET]: the agent socket of each id ($SSH_AUTH_SOCK when
    none is named), as docker buildx takes it."""
    if not values:
        return {}
    from orca.sshforward import check_agent_socket  # its socket code, only for --ssh

    out = {}
    for item in values:
        sid, eq, path = item.partition("=")
        if not sid or (eq and not path) or "," in path:
            raise _bad("--ssh", f"{item!r}: expected default|ID[=SOCKET] (one agent socket)")
        if not eq:
            path = os.environ.get("SSH_AUTH_SOCK", "")
            if not path:
                raise _bad("--ssh", f"{item!r}: SSH_AUTH_SOCK is not set (name the socket: {sid}=SOCKET)")
        out[sid] = _run(lambda: check_agent_socket(path, f"--ssh {item}"))
    return out


def _until(values) -> float | None:
    from orca.snapstore import parse_duration
    until = None
    for value in values:
        key, _, text = value.partition("=")
        if key != "until":
            raise _bad("'--filter'", f"{value!r}: the only filter is until=DURATION")
        try:
            until = parse_duration(text)
        except ValueError as err:
            raise _bad("'--filter'", str(err)) from None
    return until


COLLECTED = {"build_args": parse_build_args, "secrets": parse_secrets, "ssh": parse_ssh, "until": _until}


# the commands: flags in, library calls, the result on stdout

def build(**flags):
    """Build the Dockerfile in CONTEXT (-: a tar of the context, or a Dockerfile, on stdin)."""
    from orca.runstep import Helpers

    with Helpers().start() as helper:  # first: its start overlaps all before the first RUN
        from orca.buildflags import build_and_export

        result, delivery = _run(lambda: build_and_export(sys.stdin.buffer, sys.stderr, run_helper=helper, **flags),
                                output_shown=not flags["quiet"] and flags["progress_mode"] != "quiet")
    if not any(o.dest == "-" for o in delivery.exports):  # stdout may be the output itself
        print(result.descriptor["digest"])


def pull_cmd(layout, tag, platform, tls_ca, insecure, ref):
    """Pull REF ([host[:port]/]repo[:tag|@digest]) from its registry into a layout."""
    from umoci_py import refs
    from orca.buildflags import default_layout
    from orca.registry.pull import pull_to_layout

    client = registry_client(tls_ca, insecure)
    plat = _run(lambda: refs.parse_platform(platform) if platform else refs.host_platform())
    pulled = _run(lambda: pull_to_layout(client, ref, layout or default_layout(), tag, plat))
    print(pulled.descriptor["digest"])


def push_cmd(layout, tls_ca, insecure, tag, ref):
    """Push tag TAG of the layout to the registry reference REF."""
    from orca.buildflags import default_layout
    from orca.registry.push import push_tag

    client = registry_client(tls_ca, insecure)
    pushed = _run(lambda: push_tag(client, layout or default_layout(), tag, ref))
    print(pushed.digest)


def cache_ls(cache_dir):
    """List cached steps (key, age, instruction)."""
    from orca.cache import CacheStore, default_cache_dir

    store = _run(lambda: CacheStore(cache_dir or default_cache_dir()))
    for rec in store.list():
        size = sum(d["size"] for d in rec["image"]["layers"][-1:])
        print(f"{rec['key'][7:19]}  {size:>10}  {rec['description']}")


def prune(cache_dir, keep_storage, until, everything):
    """Remove the build cache: every record, blob, cache mount and layer
    snapshot no running build uses; with --keep-storage or --filter, only
    the layer snapshots past those limits."""
    from orca.cache import CacheStore, default_cache_dir

    store = _run(lambda: CacheStore(cache_dir or default_cache_dir()))
    if (keep_storage is not None or until is not None) and not everything:
        snaps, freed = _run(lambda: store.prune_snapshots(keep_storage, until))
        print(f"removed {snaps} layer snapshots ({freed} bytes)")
        return
    snaps, freed = _run(lambda: store.prune_snapshots())
    records, blobs = _run(store.prune)
    print(f"removed {records} cache records, {blobs} blobs and {snaps} layer snapshots ({freed} bytes)")


def registry_client(tls_ca, insecure):
    from orca.registry.client import Client, RegistryOptions

    return _run(lambda: Client(RegistryOptions(tls_ca=tuple(tls_ca), insecure=frozenset(insecure))))


def _run(fn, output_shown: bool = False):
    """The one error sink: a line on stderr and exit status 1.  A failed
    step's last output lines follow it unless the progress showed them."""
    try:
        return fn()
    except UmociError as err:
        print(f"orca-build: {err}", file=sys.stderr)
        if not output_shown:
            for line in getattr(err, "output", ()):
                print(f"  {line}", file=sys.stderr)
    except OSError as err:  # what no layer of the build turned into its own message
        where = f"{err.filename}: " if err.filename else ""
        print(f"orca-build: {where}{err.strerror or err}", file=sys.stderr)
    sys.exit(1)


# the command line

def _many(parser, *names, **kw):
    """A flag that may be given again and again (a list of its values)."""
    parser.add_argument(*names, action="append", default=[], **kw)


def _registry_options(p):
    _many(p, "--tls-ca", dest="tls_ca", type=_file("--tls-ca"), metavar="FILE",
          help="extra CA certificates (PEM) trusted for registries, on top of the system's")
    _many(p, "--insecure-registry", dest="insecure", metavar="HOST[:PORT]", help="speak plain HTTP to this registry")


def _cache_dir_option(p):
    p.add_argument("--cache-dir", type=Path, metavar="DIR", help="build cache directory (default $XDG_CACHE_HOME/orca)")


def _build_options(p):
    p.add_argument("-f", "--file", dest="dockerfile", type=Path, metavar="FILE",
                   help="Dockerfile (default CONTEXT/Dockerfile; - reads it from stdin)")
    _many(p, "-t", "--tag", dest="tags", metavar="NAME[:TAG]", help="tag the result in the layout (NAME[:TAG])")
    p.add_argument("--layout", type=Path, metavar="DIR", help="output OCI layout (default $XDG_DATA_HOME/orca/layout)")
    _many(p, "--build-arg", dest="build_args", metavar="K[=V]")
    p.add_argument("--target", metavar="STAGE", help="stage to build (default the last)")
    p.add_argument("--no-cache", action="store_true", help="run every step, ignoring the cache")
    _many(p, "--secret", dest="secrets", metavar="id=ID,src=PATH")
    p.add_argument("--platform", help="os/arch[/variant] (only the host's)")
    p.add_argument("--jobs", type=_jobs, metavar="N", help="stages run at once (default: CPUs)")
    p.add_argument("--progress", dest="progress_mode", type=_choice("--progress", MODES), default="auto",
                   metavar="|".join(MODES),
                   help="plain: numbered step log; quiet: only the digest; auto: a live view on a terminal, else plain")
    _cache_dir_option(p)
    _many(p, "-o", "--output", dest="outputs", metavar="type=TYPE[,dest=PATH][,name=N][,push=true]",
          help="oci, docker, local, tar, image, registry or cacheonly; "
               "DIR means type=local, - means type=tar to stdout")
    p.add_argument("--push", action="store_true", help="push every -t to its registry (type=registry)")
    p.add_argument("--load", action="store_true", help="also write the image into the layout when -o is given")
    p.add_argument("--cache-to", metavar="type=local,dest=DIR|type=registry,ref=REF",
                   help="export the build cache (also registry:REF; ,mode=max for every stage's steps)")
    _many(p, "--cache-from", metavar="type=local,src=DIR|type=registry,ref=REF",
          help="read a build cache exported by --cache-to (also registry:REF)")
    _many(p, "--build-context", dest="build_contexts", metavar="NAME=DIR|oci-layout://PATH[:TAG]|docker-image://REF",
          help="what FROM NAME and COPY --from=NAME read")
    _registry_options(p)
    # docker buildx build's flags for the image's metadata and the RUN sandbox
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image digest (as --progress quiet)")
    p.add_argument("--iidfile", type=_file("--iidfile"), metavar="FILE", help="write the image digest here")
    p.add_argument("--metadata-file", type=_file("--metadata-file"), metavar="FILE",
                   help="write the build's result here as JSON (containerimage.digest, ...)")
    _many(p, "--label", dest="labels", metavar="KEY=VALUE", help="add a label to the image config")
    _many(p, "--annotation", dest="annotations", metavar="[KIND:]KEY=VALUE",
          help="annotate the manifest (KIND manifest, manifest-descriptor or index)")
    p.add_argument("--pull", action="store_true",
                   help="take a base named NAME[:TAG] from its registry, never from the layout")
    _many(p, "--no-cache-filter", dest="no_cache_filter", metavar="STAGE",
          help="run the steps of this stage, ignoring the cache")
    networks = ("default", "none", "host")
    p.add_argument("--network", type=_choice("--network", networks), metavar="|".join(networks),
                   help="network of RUN steps without --network")
    _many(p, "--add-host", dest="add_hosts", metavar="NAME:IP", help="add a line to RUN's /etc/hosts")
    p.add_argument("--shm-size", metavar="SIZE", help="size of RUN's /dev/shm (e.g. 128m)")
    _many(p, "--ulimit", dest="ulimits", metavar="NAME=SOFT[:HARD]", help="resource limit of RUN")
    _many(p, "--ssh", metavar="default|ID[=SOCKET]",
          help="forward an ssh-agent socket to RUN --mount=type=ssh (default: $SSH_AUTH_SOCK)")
    p.add_argument("context", type=Path, metavar="CONTEXT",
                   help="the context directory; - reads a tar of it, or a Dockerfile, from stdin")
    p.set_defaults(command=build)


def _pull_options(p):
    p.add_argument("--layout", type=Path, metavar="DIR",
                   help="OCI layout to pull into (default $XDG_DATA_HOME/orca/layout)")
    p.add_argument("-t", "--tag", help="tag in the layout (default the reference's tag)")
    p.add_argument("--platform", help="os/arch[/variant] (default the host's)")
    _registry_options(p)
    p.add_argument("ref", metavar="REF")
    p.set_defaults(command=pull_cmd)


def _push_options(p):
    p.add_argument("--layout", type=Path, metavar="DIR",
                   help="OCI layout holding TAG (default $XDG_DATA_HOME/orca/layout)")
    _registry_options(p)
    p.add_argument("tag", metavar="TAG")
    p.add_argument("ref", metavar="REF")
    p.set_defaults(command=push_cmd)


def _cache_options(p):
    ls = p.add_subparsers(metavar="COMMAND", required=True).add_parser(
        "ls", help=_oneline(cache_ls.__doc__), description=_oneline(cache_ls.__doc__))
    _cache_dir_option(ls)
    ls.set_defaults(command=cache_ls)


def _prune_options(p):
    _cache_dir_option(p)
    p.add_argument("--keep-storage", type=_size, metavar="SIZE",
                   help="remove least recently used layer snapshots until the rest fit in SIZE (e.g. 10GB)")
    _many(p, "--filter", dest="until", metavar="until=DURATION",
          help="remove layer snapshots unused for DURATION (e.g. 24h)")
    p.add_argument("--all", dest="everything", action="store_true",
                   help="remove everything (the default without limits)")
    p.set_defaults(command=prune)


# Each command's flags are declared only when it runs (argparse's objects cost start-up time).
COMMANDS = {"build": (build.__doc__, _build_options), "pull": (pull_cmd.__doc__, _pull_options),
            "push": (push_cmd.__doc__, _push_options), "cache": ("Inspect the build cache.", _cache_options),
            "prune": (prune.__doc__, _prune_options)}


def _oneline(doc: str) -> str:
    return " ".join(doc.split())


def _top_parser() -> argparse.ArgumentParser:
    """The parser of `orca-build -h` and `--version` (the commands' names only)."""
    top = _Parser(prog="orca-build", description="Build OCI images from Dockerfiles with no privileges. "
                  "COMMAND is build unless named: orca-build [OPTIONS] CONTEXT builds.")
    top.add_argument("--version", action=_Version, nargs=0, default=argparse.SUPPRESS,
                     help="show the version and exit")
    commands = top.add_subparsers(metavar="COMMAND")
    for name, (doc, _) in COMMANDS.items():
        commands.add_parser(name, help=_oneline(doc))
    return top


def _command_parser(name: str) -> argparse.ArgumentParser:
    doc, options = COMMANDS[name]
    parser = _Parser(prog=f"orca-build {name}", description=_oneline(doc))
    options(parser)
    return parser


def run(argv: list[str] | None = None) -> None:
    """Parse the command line (default sys.argv) and run its command; exits
    non-zero on an error.  `orca-build CONTEXT` means `orca-build build CONTEXT`."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        if args[:1] in (["-h"], ["--help"], ["--version"]):
            _top_parser().parse_args(args)  # prints the help or the version, and exits
        name = args.pop(0) if args and args[0] in COMMANDS else "build"
        flags = vars(_command_parser(name).parse_args(args))
        for dest, collect in COLLECTED.items():
            if dest in flags:
                flags[dest] = collect(flags[dest])
        flags.pop("command")(**flags)
    except _Usage as err:
        print(f"orca-build: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C
        print("orca-build: aborted", file=sys.stderr)
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    """The `orca-build` command."""
    # The garbage collector, set for a process per build: the young generation
    # is collected every 50,000 allocations rather than 700, so the imports and
    # the parse, whose objects live as long as the process, are not walked ~30
    # times at start (a fully cached apt-hello 72 -> 65 ms, its CPU time 65 ->
    # 56 ms; ex01's build #2 136 -> 123 ms, medians of 9-15).
    gc.set_threshold(50_000)
    if os.environ.get("ORCA_SNAPSHOTTER", "auto") != "copy":
        # Before any thread starts: builds mount overlayfs in it (orca.userns).
        from orca import userns
        userns.enter()
    run(argv)
    # Done: the interpreter's teardown is skipped, ~10 ms with a build's ~170
    # modules loaded.  Every file is closed and every thread has ended by now;
    # only the standard streams buffer output.  (An error exits as usual.)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
