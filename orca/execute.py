"""Running a build plan: stages concurrently, each step cached or executed.

A stage walks its instructions keeping the image (config + layers), the
environment in scope and a chained cache key.  What each instruction does is
orca.steps's, dispatched on the parser's instruction types: config-only
instructions just change the config; RUN/COPY/ADD/WORKDIR give a Step whose
key is looked up in the cache and, on a miss, the stage's rootfs is brought
to the current image (once) and the step's change made into a layer.  Here:
scheduling stages, those cache decisions, working rootfs, and the export.
"""

from __future__ import annotations

import copy as pycopy
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from umoci_py import mediatypes, refs
from umoci_py.cas import Layout
from umoci_py.errors import UmociError
from umoci_py.mutate import format_time_ns

from orca import steps
from orca.cache import CacheStore, digest_of
from orca.errors import BuildError, DockerfileError
from orca.layerjobs import LayerJobs, is_pending
from orca.plan import Loaded, Stage, load_plan, parse_triggers
from orca.progress import Progress
from orca.resolve import Image, Resolver
from orca.runsettings import RunSettings
from orca.runstep import CpuSlots, Helpers, Notes
from orca.metadata import Annotation, of_kind
from orca.dockerfile import lexer
from orca.dockerfile.ignore import context_filter
from orca.dockerfile.instructions import Instruction, Run

TYPE_CHECKING = False  # typing's, without importing typing: ~2 ms of every orca-build start
if TYPE_CHECKING:
    from orca.copyrootfs import Snapshot

CONTEXT_DIGESTS = "context-digests.json"  # in the cache dir


@dataclass
class StageResult:
    """A built stage: its image, working rootfs (if one was made) and last cache key."""
    image: Image
    snapshot: Snapshot | None
    key: str                       # the stage's last chained cache key
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class BuildResult:
    """What a build made: the image's manifest descriptor and each stage's result."""
    descriptor: dict
    stages: dict[str, StageResult]
    layout: Layout                 # where the image is: the output layout, or the cache's (load=False)


def _env_dict(config: dict) -> dict[str, str]:
    env = {}
    for item in (config.get("config") or {}).get("Env") or []:
        k, _, v = item.partition("=")
        env[k] = v
    return env


class Builder:
    def __init__(self, req: BuildRequest, loaded: Loaded, platform, excluded, source_date_epoch: int | None):
        self.o = req  # its context, layout and cache as run_build made them concrete
        self.plan = loaded.plan
        self.global_args = loaded.global_args
        self.bases = loaded.bases  # each stage's FROM, expanded
        self.platform = platform
        self.excluded = excluded  # the context's .dockerignore: a predicate on paths
        self.source_date_epoch = source_date_epoch
        self.store = req.cache.layout
        self.resolver = Resolver(req.layout, self.store, platform, req.registry, req.pull, req.contexts)
        self.results: dict[int, StageResult] = {}
        from orca.snapstore import Lease, reclaim_builds
        self.lease = Lease(req.cache.root)
        self.workroot = self.lease.dir
        reclaim_builds(req.cache.root)
        self.views: list = []
        self._mode: str | None = None
        self._mode_lock = threading.Lock()
        self._digests_lock = threading.Lock()  # not the mode's: its probe would hold up cached stages' lookups
        self._digests = None
        self.slots = CpuSlots()
        self.helpers = req.run_helper or Helpers()  # the build's, closed with it
        self.layer_jobs = LayerJobs()
        self.notes = Notes(lambda text: req.progress.info(f"note: {text}"))
        self.platform_str = "/".join(p for p in (platform.os, platform.architecture, platform.variant) if p)

    def now(self) -> str:
        sde = self.source_date_epoch
        return format_time_ns(sde * 1_000_000_000 if sde is not None else time.time_ns())

    # -- scheduling ---------------------------------------------------------
    def run(self) -> BuildResult:
        try:
            with self.store.writer():
                try:
                    self._schedule()
                finally:  # the records of the steps that ran, even when a later one failed
                    self.layer_jobs.finish()
                for result in self.results.values():
                    result.image.layers = self.layer_jobs.resolve(result.image.layers)
                out = self._output_layout() if self.o.load else self.store
                desc = self._export(out, self.results[self.plan.target].image)
            self._save_digests()
            if self._mode == "copy":
                self.store_digests.save(self.workroot)
            return BuildResult(desc, {self.plan.stages[i].label: r for i, r in self.results.items()}, out)
        finally:
            try:
                self.helpers.close()
                for view in self.views:
                    view.close()
            finally:
                self.lease.release()
            if self._mode in ("overlay", "copy"):
                self.snapshots.gc_if_over_budget()

    def _schedule(self) -> None:
        """Each stage on a thread of its own once the stages it reads are done,
        at most `jobs` at once.  Plain threads and a condition: concurrent.futures
        (with logging) and queue are a few ms of every start of a cached build."""
        pending = list(self.plan.order)
        finished: list[tuple[int, StageResult | None, BaseException | None]] = []
        changed = threading.Condition()
        running = 0
        error = None

        def work(idx: int) -> None:
            try:
                outcome = (idx, self._stage(self.plan.stages[idx]), None)
            except BaseException as exc:  # noqa: BLE001 - handed to the scheduling thread
                outcome = (idx, None, exc)
            with changed:
                finished.append(outcome)
                changed.notify()

        while (pending and error is None) or running:
            for idx in list(pending):
                if error is None and running < max(1, self.o.jobs) and self.plan.deps[idx] <= set(self.results):
                    pending.remove(idx)
                    threading.Thread(target=work, args=(idx,), name=f"stage-{idx}").start()
                    running += 1
            with changed:
                changed.wait_for(lambda: finished)
                idx, result, exc = finished.pop(0)
            running -= 1
            if exc is not None:
                error = error or exc
            else:
                self.results[idx] = result
        if error is not None:
            raise error

    # -- one stage ----------------------------------------------------------
    def _stage(self, st: Stage) -> StageResult:
        if st.name in self.o.contexts:  # as BuildKit: a --build-context replaces the stage of its name
            image = self.resolver.resolve(st.name)
            return StageResult(Image(pycopy.deepcopy(image.config), list(image.layers), image.key), None, image.key)
        base = self.bases[st.index]
        parent = self.plan.stage_ref(base) if base.lower() != "scratch" else None
        if parent is not None and parent < st.index:
            src = self.results[parent].image
            image = Image(pycopy.deepcopy(src.config), list(src.layers), src.key)
        else:
            try:
                image = self.resolver.resolve(base)
            except UmociError as err:
                raise BuildError(f"{self.plan.file}:{st.line}: {err}") from None
            image = Image(pycopy.deepcopy(image.config), list(image.layers), image.key)
        instrs = list(st.instrs)
        triggers = (image.config.get("config") or {}).pop("OnBuild", None) or []
        if triggers:
            instrs = parse_triggers(triggers, self.plan.file, st.line) + instrs
        run = StageRun(self, st, image)
        last_run = max((i for i, ins in enumerate(instrs) if isinstance(ins, Run)), default=-1)
        for i, ins in enumerate(instrs):
            run.step(ins, run_ahead=i <= last_run)
        return StageResult(run.image, run.snap, run.key)

    # -- sources for COPY --from and RUN --mount from= ----------------------
    def source_identity(self, ref: str, where: str) -> str:
        """What a stage's or image's filesystem is, for a cache key, without reading it."""
        idx = self.plan.stage_ref(ref)
        if idx is not None:
            return self.results[idx].key
        try:
            return self.resolver.resolve(ref).key
        except UmociError as err:
            raise BuildError(f"{where}: {err}") from None

    def source_root(self, ref: str, where: str) -> tuple[Path, str]:
        """(directory, cache identity) of a stage's or image's filesystem."""
        idx = self.plan.stage_ref(ref)
        if idx is not None:
            res = self.results[idx]
            with res.lock:
                if res.snapshot is None:
                    res.snapshot = self.snapshot(self.workroot / f"stage-{idx}")
                self.fetch(res.image.layers)
                res.snapshot.materialize(res.image.layers, diff_ids(res.image))
            return res.snapshot.rootfs, res.key
        try:
            image = self.resolver.resolve(ref)
        except UmociError as err:
            raise BuildError(f"{where}: {err}") from None
        snap = self.snapshot(Path(tempfile.mkdtemp(dir=self.workroot)))
        self.fetch(image.layers)
        snap.materialize(image.layers, diff_ids(image))
        return snap.rootfs, image.key

    def snapshot(self, workdir: Path) -> Snapshot:
        """A working rootfs.  Its layer code is imported here, by builds that
        run a step: a no-change rebuild is mostly start-up time."""
        mode = self.mode()
        if mode == "overlay":
            from orca.snapshot import OverlayRootfs
            view = OverlayRootfs(workdir, self.store, self.snapshots, self.lease, jobs=self.layer_jobs)
        elif mode == "copy":
            from orca.copyrootfs import CopyRootfs
            view = CopyRootfs(workdir, self.store, self.snapshots, self.lease, self.store_digests)
        else:
            from orca.copyrootfs import Snapshot
            view = Snapshot(workdir, self.store)
        self.views.append(view)
        return view

    def context_digests(self):
        """Digests of the context's files from the last build on this cache
        dir, by inode, size, mtime and ctime (ctime changes on any write)."""
        with self._digests_lock:
            if self._digests is None:
                from umoci_py.mtree import DigestCache
                self._digests = DigestCache.load(self.o.cache.root / CONTEXT_DIGESTS)
            return self._digests

    def _save_digests(self) -> None:
        if self._digests is not None:
            # this context's files only: the file stays the size of one context
            prefix = os.path.abspath(self.o.context) + "/"
            self._digests.files = {k: v for k, v in self._digests.files.items() if k.startswith(prefix)}
            try:
                self._digests.save(self.workroot / CONTEXT_DIGESTS)
                os.replace(self.workroot / CONTEXT_DIGESTS, self.o.cache.root / CONTEXT_DIGESTS)
            except OSError:
                pass  # a cache of digests: the next build reads the files again

    def mode(self) -> str:
        """How working rootfs are made, chosen once per build: "overlay"
        (mounts over the snapshot store), "copy" (copied from the snapshot
        store and walked) or "extract" (extracted from the layer blobs and
        walked, where the store cannot hold whiteouts)."""
        with self._mode_lock:
            if self._mode is None:
                from orca import snapshot
                from orca.snapstore import SnapshotStore
                self.snapshots = SnapshotStore(self.o.cache.root)
                why = snapshot.overlay_unusable(self.snapshots, self.workroot)
                self._mode = "copy" if why else "overlay"
                if why:  # the fallback is named, once
                    from orca.copyrootfs import StoreDigests
                    self.store_digests = StoreDigests(self.snapshots)
                    self.o.progress.info(f"working rootfs by copy, not overlayfs: {why}")
                    from orca.copyrootfs import whiteouts_refused
                    why = whiteouts_refused(self.workroot)
                    if why:
                        self._mode = "extract"
                        self.o.progress.info(f"working rootfs extracted from the layers, not the snapshot store: {why}")
            return self._mode

    def fetch(self, layers: list[dict]) -> None:
        """Layers of registry bases and registry cache hits are downloaded only
        when read (unpacked or exported), so a cached stage costs nothing.
        Layers still being compressed are this build's own: nothing to fetch."""
        layers = [d for d in layers if not is_pending(d)]
        self.resolver.fetch(layers)
        self.o.cache.fetch(layers)

    # -- output -------------------------------------------------------------
    def _output_layout(self) -> Layout:
        try:
            return Layout.open(self.o.layout)
        except UmociError:
            self.o.layout.parent.mkdir(parents=True, exist_ok=True)
            try:
                return Layout.init(self.o.layout)
            except UmociError:
                return Layout.open(self.o.layout)  # another build created it meanwhile

    def _export(self, out: Layout, image: Image) -> dict:
        if self.o.labels:
            image = Image(pycopy.deepcopy(image.config), image.layers, image.key)
            cfg = image.config.setdefault("config", {})
            cfg["Labels"] = {**(cfg.get("Labels") or {}), **self.o.labels}
        self.fetch(image.layers)
        with out.writer():
            for desc in image.layers:
                if not out.has_blob(desc["digest"]) and \
                        not out.link_blob(self.store.blob_path(desc["digest"]), desc["digest"]):
                    with self.store.open_blob(desc["digest"], desc["size"]) as src, out.blob_writer() as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
            cdigest, csize = out.put_json(self._dated(image), "config")
            manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                   "digest": cdigest, "size": csize},
                        "layers": [mediatypes.oci_descriptor(d) for d in image.layers]}
            annotations = self.o.annotations
            if of_kind(annotations, "manifest"):
                manifest["annotations"] = of_kind(annotations, "manifest")
            mdigest, msize = out.put_json(manifest, "manifest")
            desc = {"mediaType": manifest["mediaType"], "digest": mdigest, "size": msize}
            if of_kind(annotations, "manifest-descriptor"):
                desc["annotations"] = of_kind(annotations, "manifest-descriptor")
            for tag in self.o.tags if self.o.load else ():
                refs.set_tag(out, tag, desc)
            if self.o.load and of_kind(annotations, "index"):  # the cache's index is not the image's
                with out.update_index() as index:
                    index["annotations"] = {**(index.get("annotations") or {}), **of_kind(annotations, "index")}
        return desc


    def _dated(self, image: Image) -> dict:
        """The config to export, with its times.  An image equal but for its
        times to one exported before gets that export's times, as a fully
        cached BuildKit build gives the same image: a no-change rebuild keeps
        its digest, and any change gets the clock's time."""
        config = pycopy.deepcopy(image.config)
        config["created"] = self.now()
        if self.source_date_epoch is not None:
            return config
        key = digest_of({"image": _timeless(config), "layers": [d["digest"] for d in image.layers]})
        rec = None if self.o.no_cache else self.o.cache.get(key)
        if rec is not None:
            return rec["image"]["config"]
        self.o.cache.put(key, "image times", {"config": config, "layers": image.layers})
        return config


def diff_ids(image: Image) -> list[str] | None:
    """The image's diff IDs, one per layer (None if its config does not say)."""
    ids = (image.config.get("rootfs") or {}).get("diff_ids") or []
    return list(ids) if len(ids) == len(image.layers) else None


def _timeless(config: dict) -> dict:
    out = {k: v for k, v in config.items() if k != "created"}
    out["history"] = [{k: v for k, v in h.items() if k != "created"} for h in config.get("history") or []]
    return out


class StageRun:
    """The state of one stage while its instructions are applied."""

    def __init__(self, b: Builder, st: Stage, image: Image):
        self.b = b
        self.st = st
        self.image = image
        self.key = digest_of({"base": image.key, "platform": b.platform_str,
                              "source_date_epoch": b.source_date_epoch})
        self.args: dict[str, str] = {}
        self.cmd_set = False
        self.snap: Snapshot | None = None
        self.label = f"{st.label}"
        self.no_cache = b.o.no_cache or (st.name or "").lower() in b.o.no_cache_stages

    # helpers
    @property
    def cfg(self) -> dict:
        return self.image.config.setdefault("config", {})

    def env(self) -> dict[str, str]:
        """The environment of RUN and of expansion: ARGs, then ENV over them."""
        env = dict(self.args)
        env.update(_env_dict(self.image.config))
        return env

    def where(self, ins: Instruction) -> str:
        return f"{self.b.plan.file}:{ins.line}"

    def x(self, ins: Instruction, word: str, env: dict | None = None) -> str:
        try:
            return lexer.process_word(word, self.env() if env is None else env, self.b.plan.escape)
        except DockerfileError as err:
            raise err.at(self.b.plan.file, ins.line) from None

    def history(self, created_by: str, empty: bool) -> None:
        self.image.config.setdefault("history", []).append(self._entry(created_by, empty))

    def _entry(self, created_by: str, empty: bool) -> dict:
        entry = {"created": self.b.now(), "created_by": created_by, "comment": "buildkit.dockerfile.v0"}
        if empty:
            entry["empty_layer"] = True
        return entry

    def _layer(self, snap: Snapshot, described: str, root: bool = True) -> dict:
        """What a step added to snap, as the part of an image appended by _append."""
        layer = snap.commit(self.b.source_date_epoch, root=root)
        if layer is None:
            return {"layers": [], "diff_ids": [], "history": [self._entry(described, True)]}
        desc, diff_id = layer
        return {"layers": [desc], "diff_ids": [diff_id], "history": [self._entry(described + " # buildkit", False)]}

    def _append(self, part: dict) -> None:
        self.image.layers.extend(part["layers"])
        self.image.config.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].extend(part["diff_ids"])
        self.image.config.setdefault("history", []).extend(part["history"])

    def _linked(self, action, described: str, pstep) -> dict:
        """A --link COPY/ADD: the files copied into an empty directory make the
        layer, so it can land on any base.  The record holds just that layer
        and its history entry; the stage's rootfs gets it on next use."""
        scratch = self.b.snapshot(Path(tempfile.mkdtemp(dir=self.b.workroot)))
        try:
            action(scratch.materialize([]), pstep)
            # the empty directory stands for no directory of the image: its
            # root entry would overwrite the mode and times of /
            return self._layer(scratch, described, root=False)
        finally:
            scratch.close()

    def rootfs(self) -> Path:
        if self.snap is None:
            self.snap = self.b.snapshot(self.b.workroot / f"stage-{self.st.index}")
        self.b.fetch(self.image.layers)
        return self.snap.materialize(self.image.layers, diff_ids(self.image))

    # dispatch, on the parser's instruction types
    def step(self, ins: Instruction, run_ahead: bool = False) -> None:
        """Apply ins; run_ahead: a RUN is at or after it in the stage."""
        config_only = steps.CONFIG_STEPS.get(type(ins))
        if config_only is not None:
            config_only(self, ins)
            self.key = digest_of({"parent": self.key, "config": self.image.config.get("config"),
                                  "args": sorted(self.args.items())})
            return
        make_step = steps.LAYER_STEPS.get(type(ins))
        if make_step is None:
            raise BuildError(f"{self.where(ins)}: {ins.keyword} is not supported")
        progress = self.b.o.progress
        pstep = progress.start(self.label, ins.original)
        try:
            step = make_step(self, ins)
            described, key, link = step.history, step.key, step.link
            store = self.b.o.cache
            jobs = self.b.layer_jobs
            rec = None if self.no_cache else jobs.get(store, key)
            chain = rec.get("chain", key) if rec is not None else key
            if rec is None and step.content_key is not None:
                chain = step.content_key()
                rec = None if self.no_cache else jobs.get(store, chain)
                if rec is not None:
                    jobs.record(store, key, described, rec["image"], chain)
            # after a --link step the stage is its base plus that layer
            self.key = digest_of({"parent": self.key, "link": chain}) if link else chain
            if rec is None and run_ahead:
                # every later step of the stage misses too: the RUN helper's
                # start-up (~40 ms) overlaps the steps before the RUN
                self.b.helpers.start()
            if rec is not None:
                if link:
                    self._append(pycopy.deepcopy(rec["image"]))
                else:  # a copy: later steps extend the image, never the record
                    self.image = Image(pycopy.deepcopy(rec["image"]["config"]), list(rec["image"]["layers"]),
                                       self.image.key)
                progress.cached(pstep)
                return
            if link:
                image = self._linked(step.apply, described, pstep)
                self._append(pycopy.deepcopy(image))
            else:
                rootfs = self.rootfs()
                step.apply(rootfs, pstep)
                self._append(self._layer(self.snap, described))
                image = {"config": self.image.config, "layers": self.image.layers}
            jobs.record(store, key, described, image, chain)
            if chain != key:
                jobs.record(store, chain, described, image, chain)
            progress.done(pstep)
        except BuildError as err:
            progress.failed(pstep, str(err))
            raise
        except UmociError as err:
            progress.failed(pstep, str(err))
            raise BuildError(f"{self.where(ins)}: {ins.original}: {err}") from None


@dataclass
class BuildRequest:
    """What `orca-build` was asked, before anything is read."""
    context: Path
    layout: Path
    cache_dir: Path
    progress: Progress
    dockerfile: Path | None = None
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    no_cache_stages: frozenset[str] = frozenset()
    secrets: dict[str, Path] = field(default_factory=dict)
    ssh: dict[str, Path] = field(default_factory=dict)
    run: RunSettings = RunSettings()
    labels: dict[str, str] = field(default_factory=dict)
    annotations: tuple[Annotation, ...] = ()
    pull: bool = False
    platform: str | None = None
    jobs: int = 1
    registry: object = None                 # orca.registry.client.Client, None: no registry access
    cache: CacheStore | None = None         # e.g. a registry-backed store; None: CacheStore(cache_dir)
    dockerfile_text: str | None = None      # the Dockerfile itself (`-f -`), named `dockerfile` or "Dockerfile"
    load: bool = True                       # into `layout` and tagged; else only into the cache's layout
    contexts: dict = field(default_factory=dict)  # --build-context: name -> orca.contexts.NamedContext
    run_helper: Helpers | None = None       # started ahead by the caller; else at a stage's first miss


def run_build(req: BuildRequest) -> BuildResult:
    context = Path(req.context)
    if not context.is_dir():
        raise BuildError(f"{context}: build context is not a directory")
    dockerfile = Path(req.dockerfile) if req.dockerfile else context / "Dockerfile"
    text = req.dockerfile_text
    if text is None:
        try:
            text = dockerfile.read_text(encoding="utf-8")
        except OSError as err:
            raise BuildError(f"{dockerfile}: cannot read the Dockerfile: {err.strerror}") from None
    for tag in req.tags:
        refs.check_tag(tag)
    host = refs.host_platform()
    platform = refs.parse_platform(req.platform) if req.platform else host
    if (platform.os, platform.architecture) != (host.os, host.architecture):
        raise BuildError(f"--platform {req.platform}: only the host platform "
                         f"{host.os}/{host.architecture} can be built (no emulation)")
    sde_text = req.build_args.get("SOURCE_DATE_EPOCH", os.environ.get("SOURCE_DATE_EPOCH", ""))
    if sde_text and not sde_text.isdigit():
        raise BuildError(f"SOURCE_DATE_EPOCH={sde_text!r}: not a number of seconds")
    loaded = load_plan(text, str(dockerfile), req.build_args, req.target, platform)
    req.progress.redact = tuple(Path(p).read_bytes().strip() for p in req.secrets.values())
    req = replace(req, context=context, layout=Path(req.layout), cache=req.cache or CacheStore(req.cache_dir))
    builder = Builder(req, loaded, platform, context_filter(context, dockerfile),
                      int(sde_text) if sde_text else None)
    with req.progress.capturing_logs():
        return builder.run()
