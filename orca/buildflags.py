"""`orca-build build`'s flags (docker buildx build's) made into a build, and
the exports after it: outputs, --cache-to, --metadata-file, --iidfile.

The CLI parses the flags into a BuildFlags and calls build_and_export; the
parts it needs are imported by the calls that use them, as start-up time is
most of a fully cached build.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from orca.errors import BuildError


@dataclass
class BuildFlags:
    """The flags as given, but for the few the CLI parses into typed values
    (build args, secrets, ssh agents)."""
    context: Path                            # `-`: a tar of the context, or a Dockerfile, on stdin
    dockerfile: Path | None = None           # `-`: the Dockerfile on stdin
    tags: tuple[str, ...] = ()
    layout: Path | None = None               # None: default_layout()
    build_args: dict[str, str] | None = None
    target: str | None = None
    no_cache: bool = False
    secrets: dict[str, Path] | None = None
    platform: str | None = None
    jobs: int | None = None                  # None: the CPUs
    progress_mode: str = "auto"
    cache_dir: Path | None = None            # None: orca.cache.default_cache_dir()
    outputs: tuple[str, ...] = ()
    push: bool = False
    load: bool = False
    cache_to: str | None = None
    cache_from: tuple[str, ...] = ()
    build_contexts: tuple[str, ...] = ()
    tls_ca: tuple[Path, ...] = ()
    insecure: tuple[str, ...] = ()
    quiet: bool = False
    iidfile: Path | None = None
    metadata_file: Path | None = None
    labels: tuple[str, ...] = ()
    annotations: tuple[str, ...] = ()
    pull: bool = False
    no_cache_filter: tuple[str, ...] = ()
    network: str | None = None
    add_hosts: tuple[str, ...] = ()
    shm_size: str | None = None
    ulimits: tuple[str, ...] = ()
    ssh: dict[str, Path] | None = None

    @property
    def progress(self) -> str:
        return "quiet" if self.quiet else self.progress_mode


def default_layout() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "orca" / "layout"


class LazyClient:
    """A registry client made on first use: most builds never talk to a
    registry, and loading the system's CA certificates takes ~40 ms."""

    def __init__(self, tls_ca, insecure):
        self._args = (tls_ca, insecure)
        self._client = None

    def __getattr__(self, name):
        if self._client is None:
            from orca.registry.client import Client, RegistryOptions

            tls_ca, insecure = self._args
            self._client = Client(RegistryOptions(tls_ca=tuple(tls_ca), insecure=frozenset(insecure)))
        return getattr(self._client, name)


def build_and_export(flags: BuildFlags, stdin: BinaryIO, stderr):
    """Build as the flags ask, progress on stderr, and export the result.
    (BuildResult, the outputs' Delivery); UmociError or OSError on failure."""
    from orca import metadata, runsettings
    from orca.cache import default_cache_dir
    from orca.cache_export import ImportingCacheStore, parse_cache_spec
    from orca.contexts import parse_build_contexts, stdin_context
    from orca.execute import BuildRequest, run_build
    from orca.outputs import deliver, parse_output, plan
    from orca.progress import open_progress

    client = LazyClient(flags.tls_ca, flags.insecure)
    cache_dir = flags.cache_dir or default_cache_dir()
    delivery = plan([parse_output(o) for o in flags.outputs], list(flags.tags), flags.load, flags.push)
    named = parse_build_contexts(flags.build_contexts)
    store = ImportingCacheStore(cache_dir, [parse_cache_spec(c, "--cache-from") for c in flags.cache_from],
                                parse_cache_spec(flags.cache_to, "--cache-to") if flags.cache_to else None,
                                client)
    run_settings = runsettings.from_flags(flags.network, flags.ulimits, flags.shm_size, flags.add_hosts)
    annotated = tuple(a for text in flags.annotations for a in metadata.parse_annotation(text))
    image_labels = metadata.parse_labels(flags.labels)
    from_stdin, context_stdin = str(flags.dockerfile) == "-", str(flags.context) == "-"
    text = _read_stdin(stdin, "-f -", not context_stdin).decode("utf-8", "replace") if from_stdin else None
    source = (stdin_context(_read_stdin(stdin, "context -"), store.root) if context_stdin
              else contextlib.nullcontext((flags.context, None)))
    with source as (context_dir, stdin_dockerfile):
        file = None if from_stdin else flags.dockerfile
        if file is not None and context_stdin and not file.is_absolute():
            file = context_dir / file  # a path inside the tar
        req = BuildRequest(context=context_dir, dockerfile=file,
                           dockerfile_text=text if text is not None else stdin_dockerfile,
                           tags=delivery.tags, load=delivery.load, layout=flags.layout or default_layout(),
                           build_args=flags.build_args or {}, target=flags.target, no_cache=flags.no_cache,
                           secrets=flags.secrets or {}, ssh=flags.ssh or {},
                           no_cache_stages=frozenset(s.lower() for s in flags.no_cache_filter), run=run_settings,
                           labels=image_labels, annotations=annotated, pull=flags.pull, platform=flags.platform,
                           jobs=flags.jobs or os.cpu_count() or 1, cache_dir=cache_dir,
                           progress=open_progress(flags.progress, stderr), registry=client, cache=store,
                           contexts=named)
        with store.layout.writer():  # an image only in the cache stays there until it is exported
            # the progress is closed before an error is printed, so its last redraw cannot cover it
            with req.progress:
                result = run_build(req)
            deliver(result.layout, result.descriptor, delivery, client)
            store.export(result.layout.read_json(result.descriptor, "manifest")["layers"])
            if flags.metadata_file:
                metadata.write_metadata(flags.metadata_file, metadata.image_metadata(
                    result.layout.path, result.descriptor, delivery.tags or list(flags.tags)))
    if flags.iidfile:
        metadata.write_file(flags.iidfile, result.descriptor["digest"])
    return result, delivery


def _read_stdin(stdin: BinaryIO, what: str, free: bool = True) -> bytes:
    if not free:
        raise BuildError("-f - and the context - cannot both read stdin")
    if stdin.isatty():
        raise BuildError(f"{what}: stdin is a terminal, not a Dockerfile or a context")
    return stdin.read()
