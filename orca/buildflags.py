"""`orca-build build`'s flags (docker buildx build's) made into a build, and
the exports after it: outputs, --cache-to, --metadata-file, --iidfile.

The parts a build needs are imported by the calls that use them: start-up
time is most of a fully cached build.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from orca.errors import BuildError

TYPE_CHECKING = False  # typing's, without importing typing: ~2 ms of every orca-build start
if TYPE_CHECKING:
    from typing import BinaryIO


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


def build_and_export(stdin: BinaryIO, stderr, *, context: Path, dockerfile: Path | None = None,
                     tags=(), layout: Path | None = None, build_args: dict[str, str] | None = None,
                     target: str | None = None, no_cache: bool = False, secrets: dict[str, Path] | None = None,
                     platform: str | None = None, jobs: int | None = None, progress_mode: str = "auto",
                     cache_dir: Path | None = None, outputs=(), push: bool = False, load: bool = False,
                     cache_to: str | None = None, cache_from=(), build_contexts=(), tls_ca=(), insecure=(),
                     quiet: bool = False, iidfile: Path | None = None, metadata_file: Path | None = None,
                     labels=(), annotations=(), pull: bool = False, no_cache_filter=(), network: str | None = None,
                     add_hosts=(), shm_size: str | None = None, ulimits=(), ssh: dict[str, Path] | None = None,
                     run_helper=None):
    """Build as `orca-build build`'s flags ask (the CLI has parsed build_args,
    secrets and ssh into typed values; the rest are the flags' strings), its
    progress on stderr, and export the result.  (BuildResult, the outputs'
    Delivery); UmociError or OSError on failure.  `context` or `dockerfile`
    `-` read stdin: a tar of the context (or a Dockerfile), or the Dockerfile.
    run_helper: an orca.runstep.Helpers started ahead, which the build closes."""
    from orca import metadata, runsettings
    from orca.cache import CacheStore, default_cache_dir
    from orca.execute import BuildRequest, run_build
    from orca.outputs import deliver, parse_output, plan
    from orca.progress import open_progress

    client = LazyClient(tls_ca, insecure)
    cache_dir = cache_dir or default_cache_dir()
    delivery = plan([parse_output(o) for o in outputs], list(tags), load, push)
    named = {}
    if build_contexts:
        from orca.contexts import parse_build_contexts
        named = parse_build_contexts(build_contexts)
    if cache_from or cache_to:
        from orca.cache_export import ImportingCacheStore, parse_cache_spec
        store = ImportingCacheStore(cache_dir, [parse_cache_spec(c, "--cache-from") for c in cache_from],
                                    parse_cache_spec(cache_to, "--cache-to") if cache_to else None,
                                    client)
    else:
        store = CacheStore(cache_dir)
    run_settings = runsettings.from_flags(network, ulimits, shm_size, add_hosts)
    annotated = tuple(a for text in annotations for a in metadata.parse_annotation(text))
    image_labels = metadata.parse_labels(labels)
    from_stdin, context_stdin = str(dockerfile) == "-", str(context) == "-"
    text = _read_stdin(stdin, "-f -", not context_stdin).decode("utf-8", "replace") if from_stdin else None
    source = contextlib.nullcontext((context, None))
    if context_stdin:
        from orca.contexts import stdin_context
        source = stdin_context(_read_stdin(stdin, "context -"), store.root)
    with source as (context_dir, stdin_dockerfile):
        file = None if from_stdin else dockerfile
        if file is not None and context_stdin and not file.is_absolute():
            file = context_dir / file  # a path inside the tar
        progress = open_progress("quiet" if quiet else progress_mode, stderr)
        req = BuildRequest(context=context_dir, dockerfile=file,
                           dockerfile_text=text if text is not None else stdin_dockerfile,
                           tags=delivery.tags, load=delivery.load, layout=layout or default_layout(),
                           build_args=build_args or {}, target=target, no_cache=no_cache,
                           secrets=secrets or {}, ssh=ssh or {},
                           no_cache_stages=frozenset(s.lower() for s in no_cache_filter), run=run_settings,
                           labels=image_labels, annotations=annotated, pull=pull, platform=platform,
                           jobs=jobs or os.cpu_count() or 1, cache_dir=cache_dir,
                           progress=progress, registry=client, cache=store, contexts=named,
                           run_helper=run_helper)
        with store.layout.writer():  # an image only in the cache stays there until it is exported
            # the progress is closed before an error is printed, so its last redraw cannot cover it
            with req.progress:
                result = run_build(req)
            deliver(result.layout, result.descriptor, delivery, client)
            if cache_to:
                store.export(result.layout.read_json(result.descriptor, "manifest")["layers"])
            if metadata_file:
                metadata.write_metadata(metadata_file, metadata.image_metadata(
                    result.layout.path, result.descriptor, delivery.tags or list(tags)))
    if iidfile:
        metadata.write_file(iidfile, result.descriptor["digest"])
    return result, delivery


def _read_stdin(stdin: BinaryIO, what: str, free: bool = True) -> bytes:
    if not free:
        raise BuildError("-f - and the context - cannot both read stdin")
    if stdin.isatty():
        raise BuildError(f"{what}: stdin is a terminal, not a Dockerfile or a context")
    return stdin.read()
