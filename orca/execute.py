"""Running a build plan: stages concurrently, each step cached or executed.

A stage walks its instructions keeping the image (config + layers), the
environment in scope and a chained cache key.  Config-only instructions just
change the config; RUN/COPY/ADD/WORKDIR look their key up in the cache and,
on a miss, bring the stage's rootfs to the current image (once) and make a
layer of what the step changed.
"""

from __future__ import annotations

import copy as pycopy
import os
import posixpath
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from umoci_py import mediatypes, refs
from umoci_py.cas import Layout
from umoci_py.errors import UmociError
from umoci_py.mutate import format_time_ns
from umoci_py.unpriv import remove_tree

from orca import copy as cp
from orca import mounts as mnt
from orca.copy import context_filter
from orca.cache import CacheStore, digest_of, step_key
from orca.errors import BuildError, DockerfileError, OrcaError
from orca.plan import Plan, Stage, load_plan, parse_triggers
from orca.progress import Progress
from orca.resolve import Image, Resolver
from orca.runsettings import RunSettings
from orca.runstep import BUILD_HOSTNAME, CpuSlots, Notes, run_isolated
from orca.metadata import Annotation, of_kind
from orca.dockerfile import ignore, lexer
from orca.dockerfile import instructions as di
from orca.dockerfile.instructions import Instruction, parse_chmod, parse_mount, parse_ports

if TYPE_CHECKING:
    from orca.snapshot import Snapshot

DEFAULT_SHELL = ["/bin/sh", "-c"]
CONTEXT_DIGESTS = "context-digests.json"  # in the cache dir


@dataclass
class BuildOptions:
    context: Path
    plan: Plan
    layout: Path
    cache: CacheStore
    progress: Progress
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    global_args: dict[str, str] = field(default_factory=dict)
    bases: list[str] = field(default_factory=list)
    no_cache: bool = False
    no_cache_stages: frozenset[str] = frozenset()            # --no-cache-filter: stage names
    secrets: dict[str, Path] = field(default_factory=dict)
    ssh: dict[str, Path] = field(default_factory=dict)       # --ssh: agent sockets by id
    run: RunSettings = RunSettings()                          # --network, --ulimit, --shm-size, --add-host
    labels: dict[str, str] = field(default_factory=dict)      # --label: the image config's Labels
    annotations: tuple[Annotation, ...] = ()                  # --annotation
    pull: bool = False                                        # --pull: bare base names from the registry
    platform: object = None
    jobs: int = 1
    excluded: object = cp._never
    source_date_epoch: int | None = None
    registry: object = None  # orca.registry.client.Client: FROM/COPY --from images in registries
    load: bool = True        # the image goes into `layout` with its tags; else only into the cache's
    contexts: dict = field(default_factory=dict)  # --build-context name -> orca.contexts.NamedContext


@dataclass
class Step:
    """What a layer instruction (RUN, COPY, ADD, WORKDIR) does, worked out
    before the cache is asked: nothing is read or run until apply."""
    history: str                                  # created_by of its history entry
    key: str                                      # the chained cache key: the quick look-up
    apply: Callable[[Path, object], None]         # (rootfs, progress step): make the change
    content_key: Callable[[], str] | None = None  # COPY --from: the key of the copied content
    link: bool = False                            # --link: the layer is made apart from the stage


@dataclass
class StageResult:
    image: Image
    snapshot: Snapshot | None
    key: str                       # the stage's last chained cache key
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class BuildResult:
    descriptor: dict
    stages: dict[str, StageResult]
    layout: Layout                 # where the image is: the output layout, or the cache's (load=False)


def _env_dict(config: dict) -> dict[str, str]:
    env = {}
    for item in (config.get("config") or {}).get("Env") or []:
        k, _, v = item.partition("=")
        env[k] = v
    return env


def _set_env(config: dict, key: str, value: str) -> None:
    cfg = config.setdefault("config", {})
    env = cfg.get("Env") or []
    for i, item in enumerate(env):
        if item.partition("=")[0] == key:
            env[i] = f"{key}={value}"
            break
    else:
        env.append(f"{key}={value}")
    cfg["Env"] = env


class Builder:
    def __init__(self, opts: BuildOptions):
        self.o = opts
        self.plan = opts.plan
        self.store = opts.cache.layout
        self.resolver = Resolver(opts.layout, self.store, opts.platform, opts.registry, opts.pull, opts.contexts)
        self.results: dict[int, StageResult] = {}
        from orca.snapstore import Lease, reclaim_builds
        self.lease = Lease(opts.cache.root)
        self.workroot = self.lease.dir
        reclaim_builds(opts.cache.root)
        self.views: list = []
        self._mode: str | None = None
        self._mode_lock = threading.Lock()
        self._digests = None
        self.slots = CpuSlots()
        self.notes = Notes(lambda text: opts.progress.info(f"note: {text}"))
        self.platform_str = "/".join(p for p in (opts.platform.os, opts.platform.architecture,
                                                  opts.platform.variant) if p)

    def now(self) -> str:
        sde = self.o.source_date_epoch
        return format_time_ns(sde * 1_000_000_000 if sde is not None else time.time_ns())

    # -- scheduling ---------------------------------------------------------
    def run(self) -> BuildResult:
        try:
            with self.store.writer():
                self._schedule()
                out = self._output_layout() if self.o.load else self.store
                desc = self._export(out, self.results[self.plan.target].image)
            self._save_digests()
            return BuildResult(desc, {self.plan.stages[i].label: r for i, r in self.results.items()}, out)
        finally:
            try:
                for view in self.views:
                    view.close()
            finally:
                self.lease.release()
            if self._mode == "overlay":
                self.snapshots.gc_if_over_budget()

    def _schedule(self) -> None:
        pending = list(self.plan.order)
        running = {}
        error = None
        with ThreadPoolExecutor(max_workers=max(1, self.o.jobs)) as pool:
            while (pending and error is None) or running:
                for idx in list(pending):
                    if error is None and self.plan.deps[idx] <= set(self.results):
                        pending.remove(idx)
                        running[pool.submit(self._stage, self.plan.stages[idx])] = idx
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    idx = running.pop(fut)
                    exc = fut.exception()
                    if exc is not None:
                        error = error or exc
                    else:
                        self.results[idx] = fut.result()
        if error is not None:
            raise error

    # -- one stage ----------------------------------------------------------
    def _stage(self, st: Stage) -> StageResult:
        if st.name in self.o.contexts:  # as BuildKit: a --build-context replaces the stage of its name
            image = self.resolver.resolve(st.name)
            return StageResult(Image(pycopy.deepcopy(image.config), list(image.layers), image.key), None, image.key)
        base = self.o.bases[st.index]
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
        for ins in instrs:
            run.step(ins)
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
        from orca import snapshot
        if self.mode() == "overlay":
            view = snapshot.OverlayRootfs(workdir, self.store, self.snapshots, self.lease)
        else:
            view = snapshot.Snapshot(workdir, self.store)
        self.views.append(view)
        return view

    def context_digests(self):
        """Digests of the context's files from the last build on this cache
        dir, by inode, size, mtime and ctime (ctime changes on any write)."""
        with self._mode_lock:
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
        """How working rootfs are made: "overlay" (mounts over the snapshot
        store) or "copy" (extracted and walked), chosen once per build."""
        with self._mode_lock:
            if self._mode is None:
                from orca import snapshot
                from orca.snapstore import SnapshotStore
                self.snapshots = SnapshotStore(self.o.cache.root)
                why = snapshot.overlay_unusable(self.snapshots, self.workroot)
                self._mode = "copy" if why else "overlay"
                if why:  # the fallback is named, once
                    self.o.progress.info(f"working rootfs by copy, not overlayfs: {why}")
            return self._mode

    def fetch(self, layers: list[dict]) -> None:
        """Layers of registry bases and registry cache hits are downloaded only
        when read (unpacked or exported), so a cached stage costs nothing."""
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
        if self.o.source_date_epoch is not None:
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
                              "source_date_epoch": b.o.source_date_epoch})
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
        layer = snap.commit(self.b.o.source_date_epoch, root=root)
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
    def step(self, ins: Instruction) -> None:
        config_only = CONFIG_STEPS.get(type(ins))
        if config_only is not None:
            config_only(self, ins)
            self.key = digest_of({"parent": self.key, "config": self.image.config.get("config"),
                                  "args": sorted(self.args.items())})
            return
        make_step = LAYER_STEPS.get(type(ins))
        if make_step is None:
            raise BuildError(f"{self.where(ins)}: {ins.keyword} is not supported")
        progress = self.b.o.progress
        pstep = progress.start(self.label, ins.original)
        try:
            step = make_step(self, ins)
            described, key, action, slow, link = step.history, step.key, step.apply, step.content_key, step.link
            store = self.b.o.cache
            rec = None if self.no_cache else store.get(key)
            chain = rec.get("chain", key) if rec is not None else key
            if rec is None and slow is not None:
                chain = slow()
                rec = None if self.no_cache else store.get(chain)
                if rec is not None:
                    store.put(key, described, rec["image"], chain)
            # after a --link step the stage is its base plus that layer
            self.key = digest_of({"parent": self.key, "link": chain}) if link else chain
            if rec is not None:
                if link:
                    self._append(pycopy.deepcopy(rec["image"]))
                else:  # a copy: later steps extend the image, never the record
                    self.image = Image(pycopy.deepcopy(rec["image"]["config"]), list(rec["image"]["layers"]),
                                       self.image.key)
                progress.cached(pstep)
                return
            if link:
                image = self._linked(action, described, pstep)
                self._append(pycopy.deepcopy(image))
            else:
                rootfs = self.rootfs()
                action(rootfs, pstep)
                self._append(self._layer(self.snap, described))
                image = {"config": self.image.config, "layers": self.image.layers}
            store.put(key, described, image, chain)
            if chain != key:
                store.put(chain, described, image, chain)
            progress.done(pstep)
        except BuildError as err:
            progress.failed(pstep, str(err))
            raise
        except UmociError as err:
            progress.failed(pstep, str(err))
            raise BuildError(f"{self.where(ins)}: {ins.original}: {err}") from None

    # config-only instructions
    def do_env(self, ins: di.Env) -> None:
        env = self.env()
        pairs = [(self.x(ins, k, env), self.x(ins, v or "", env)) for k, v in ins.pairs]
        for k, v in pairs:
            _set_env(self.image.config, k, v)
        self.history("ENV " + " ".join(f"{k}={v}" for k, v in pairs), True)

    def do_arg(self, ins: di.Arg) -> None:
        shown = []
        for name, default in ((a.name, a.default) for a in ins.args):
            name = self.x(ins, name)
            if name in self.b.o.build_args:
                value = self.b.o.build_args[name]
            elif default is not None:
                value = self.x(ins, default)
            elif name in self.b.o.global_args:
                value = self.b.o.global_args[name]
            else:
                shown.append(name)
                continue
            self.args[name] = value
            shown.append(f"{name}={value}")
        self.history("ARG " + " ".join(shown), True)

    def do_label(self, ins: di.Label) -> None:
        env = self.env()
        labels = self.cfg.setdefault("Labels", {}) or {}
        pairs = [(self.x(ins, k, env), self.x(ins, v or "", env)) for k, v in ins.pairs]
        labels.update(pairs)
        self.cfg["Labels"] = labels
        self.history("LABEL " + " ".join(f"{k}={v}" for k, v in pairs), True)

    def do_user(self, ins: di.User) -> None:
        self.cfg["User"] = self.x(ins, ins.user)
        self.history(f"USER {self.cfg['User']}", True)

    def do_volume(self, ins: di.Volume) -> None:
        vols = [self.x(ins, a) for a in ins.paths]
        self.cfg.setdefault("Volumes", {})
        for v in vols:
            self.cfg["Volumes"][v] = {}
        self.history("VOLUME " + ("[" + " ".join(vols) + "]"), True)

    def do_expose(self, ins: di.Expose) -> None:
        ports = []
        for a in ins.ports:
            try:
                words = lexer.process_words(a, self.env(), self.b.plan.escape)
                ports += parse_ports(words)
            except DockerfileError as err:
                raise err.at(self.b.plan.file, ins.line) from None
        self.cfg.setdefault("ExposedPorts", {})
        for p in ports:
            self.cfg["ExposedPorts"][p] = {}
        self.history("EXPOSE [" + " ".join(sorted(ports)) + "]", True)

    def do_stopsignal(self, ins: di.StopSignal) -> None:
        self.cfg["StopSignal"] = self.x(ins, ins.signal)
        self.history(f"STOPSIGNAL {self.cfg['StopSignal']}", True)

    def do_shell(self, ins: di.Shell) -> None:
        self.cfg["Shell"] = list(ins.shell)
        self.history("SHELL " + _json(ins.shell), True)

    def _argv(self, ins: di.Run | di.Cmd | di.Entrypoint) -> list[str]:
        if not ins.shell_form:
            return list(ins.cmd)
        return list(self.cfg.get("Shell") or DEFAULT_SHELL) + [" ".join(ins.cmd)]

    def do_cmd(self, ins: di.Cmd) -> None:
        self.cfg["Cmd"] = self._argv(ins)
        self.cfg["ArgsEscaped"] = True
        self.cmd_set = True
        self.history("CMD " + _json(self.cfg["Cmd"]), True)

    def do_entrypoint(self, ins: di.Entrypoint) -> None:
        self.cfg["Entrypoint"] = self._argv(ins)
        if not self.cmd_set:
            self.cfg.pop("Cmd", None)
        self.history("ENTRYPOINT " + _json(self.cfg["Entrypoint"]), True)

    def do_healthcheck(self, ins: di.Healthcheck) -> None:
        self.cfg["Healthcheck"] = {"Test": list(ins.test), "Interval": ins.interval, "Timeout": ins.timeout,
                                   "StartPeriod": ins.start_period, "StartInterval": ins.start_interval,
                                   "Retries": ins.retries}
        self.history(ins.original, True)

    def do_onbuild(self, ins: di.OnBuild) -> None:
        self.cfg.setdefault("OnBuild", [])
        self.cfg["OnBuild"] = (self.cfg["OnBuild"] or []) + [ins.expression]

    def do_maintainer(self, ins: di.Maintainer) -> None:
        self.image.config["author"] = ins.name
        self.history(f"MAINTAINER {ins.name}", True)

    # layer instructions: each returns its Step
    def do_workdir(self, ins: di.Workdir) -> Step:
        path = self.x(ins, ins.path)
        path = posixpath.normpath(posixpath.join(self.cfg.get("WorkingDir") or "/", path))
        self.cfg["WorkingDir"] = path
        key = step_key(self.key, {"kind": "WORKDIR", "path": path, "user": self.cfg.get("User", "")},
                       {}, self.b.platform_str)

        def action(rootfs: Path, _step) -> None:
            if path != "/":
                owner = self._owner(rootfs, self.cfg.get("User") or "")
                cp.make_dirs(rootfs, path, owner)
        return Step(f"WORKDIR {path}", key, action)

    def _owner(self, rootfs: Path | None, spec: str) -> tuple[int, int]:
        if not spec:
            return 0, 0
        from umoci_py.bundle import resolve_user  # with the layer code, for steps that run
        try:
            u = resolve_user(spec, rootfs)
        except UmociError as err:
            raise BuildError(f"{err}") from None
        return u.uid, u.gid

    def do_copy(self, ins: di.Copy) -> Step:  # and ADD
        add = isinstance(ins, di.Add)
        where = self.where(ins)
        srcs = [self.x(ins, a) for a in ins.sources]
        dest = self.x(ins, ins.dest)
        chown = self.x(ins, ins.chown) if ins.chown else None
        chmod_s = self.x(ins, ins.chmod) if ins.chmod else None
        chmod = _chmod(chmod_s, where)
        checksum = self.x(ins, ins.checksum) if add and ins.checksum else None
        excludes = [self.x(ins, e) for e in ins.exclude]
        exclude = _exclude_matcher(excludes, where)
        parents = ins.parents
        from_ = ins.from_
        workdir = self.cfg.get("WorkingDir") or "/"
        excluded = self.b.o.excluded
        what = f"{where}: {ins.keyword}"
        tmp = Path(tempfile.mkdtemp(dir=self.b.workroot))
        identity = None
        if ins.heredocs:
            for doc in ins.heredocs:
                (tmp / doc.name).write_text(self.x(ins, doc.content) if doc.expand else doc.content)
                os.chmod(tmp / doc.name, 0o644)
            root, excluded = tmp, cp._never
            srcs = [doc.name for doc in ins.heredocs]
        elif from_:
            root, excluded = None, cp._never  # the source stage is materialized only on a miss
            identity = self.b.source_identity(from_, where)
        else:
            root = self.b.o.context
        urls = [s for s in srcs if add and s.startswith(("http://", "https://"))]
        if urls:
            if len(srcs) != 1:
                raise BuildError(f"{what}: a URL source must be the only source")
            fetched = cp.fetch_url(urls[0], checksum, tmp, what)
            root, excluded, srcs = tmp, cp._never, [fetched.name]
        elif checksum:
            raise BuildError(f"{what}: --checksum needs a URL source")
        selected: list = []
        kept: dict[str, str] = {}  # --parents: source -> the path kept under dest

        def sources() -> tuple[Path, list]:
            nonlocal root
            if not selected:
                if root is None:
                    root = self.b.source_root(from_, where)[0]
                for pattern in srcs:
                    chosen = cp.select(root, [pattern.replace("/./", "/")], what, excluded)
                    selected.extend(chosen)
                    kept.update(_parent_paths(pattern, chosen))
            return root, selected
        instr = {"kind": ins.keyword, "sources": srcs, "dest": dest, "workdir": workdir, "chown": chown,
                 "chmod": chmod_s, "urls": urls, "exclude": excludes, "parents": parents}
        link = ins.link
        # --link: the layer is made apart from the stage, so its key leaves the
        # stage out, unless an owner is looked up in the stage's /etc/passwd
        numeric_owner = chown is None or re.fullmatch(r"\d+:\d+", chown) is not None
        parent = self.key
        if link:
            instr["link"] = True
            if numeric_owner:
                parent = digest_of({"link": True, "source_date_epoch": self.b.o.source_date_epoch})
        content = identity or cp.content_digest(*sources(), excluded, exclude=exclude,
                                                digests=self.b.context_digests())
        key = step_key(parent, instr, {}, self.b.platform_str, content)
        # COPY --from: BuildKit merges equal results, so the content of the
        # selected files (not which build of the stage made them) is the key
        # that chains on; the stage key is only the quick first look-up.
        slow = (lambda: step_key(parent, instr, {}, self.b.platform_str,
                                 cp.content_digest(*sources(), cp._never, owners=True,
                                                   exclude=exclude))) if from_ else None
        flags = "".join(f" --{k}={v}" for k, v in (("chown", chown), ("chmod", chmod_s)) if v)
        if parents:
            flags = " --parents" + flags
        if link:
            flags = " --link" + flags
        described = f"{ins.keyword}{flags} {' '.join(srcs)} {dest}"

        def action(rootfs: Path, _step) -> None:
            root, chosen = sources()
            users = rootfs
            if link:  # rootfs is the empty directory of the layer
                users = None if numeric_owner else self.rootfs()
            owner = self._owner(users, chown) if chown else None
            target, as_dir = cp.destination(rootfs, dest, workdir, chosen, what)
            if add and not urls and not from_:
                archives = [s for s in chosen if (root / s.rel).is_file() and cp.is_archive(root / s.rel)]
                for s in archives:
                    cp.extract_archive(root / s.rel, rootfs, target)
                chosen = [s for s in chosen if s not in archives]
            opts = cp.CopyOptions(owner=owner, chmod=chmod, keep_owner=bool(from_), exclude=exclude,
                                  parents=kept if parents else None)
            cp.copy_sources(root, chosen, rootfs, target, as_dir, opts, excluded)
        return Step(described, key, action, slow, link)

    def do_run(self, ins: di.Run) -> Step:
        where = self.where(ins)
        if ins.security not in (None, "sandbox"):
            raise BuildError(f"{where}: RUN --security={ins.security}: not allowed "
                             f"(a rootless build has no privileges to grant)")
        argv = self._argv(ins)
        env = self.env()
        settings = self.b.o.run
        network = ins.network or settings.network
        mounts = self._mounts(ins.mounts, where, env)
        script = ins.script_file
        if script is not None:
            mounts.append(mnt.script_mount(script, self.b.workroot))
            argv = [f"{mnt.PIPES}/{script.name}"]
        user = self.cfg.get("User") or ""
        cwd = self.cfg.get("WorkingDir") or "/"
        instr = {"kind": "RUN", "argv": argv, "user": user, "cwd": cwd, "network": network,
                 "mounts": [m.key for m in mounts], **settings.key()}
        run_env = dict(env)
        for m in mounts:
            if m.env:
                run_env[m.env[0]] = m.env[1]
        key = step_key(self.key, instr, env, self.b.platform_str)
        shown = [f"{k}={v}" for k, v in self.args.items()
                 if k.lower() not in ("http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy")]
        prefix = f"|{len(shown)} {' '.join(shown)} " if shown else ""
        described = f"RUN {prefix}{' '.join(argv)}"

        def action(rootfs: Path, pstep) -> None:
            from runrootless import api as rr  # the sandbox and tracer: ~30 ms, for steps that run
            from umoci_py.bundle import resolve_user
            u = resolve_user(user, rootfs) if user else None
            cp.make_dirs(rootfs, cwd, None)
            specs, cleanup = [], []
            try:
                for m in mounts:
                    spec, undo = m.prepare(rootfs)
                    cleanup.append(undo)
                    if spec is not None:
                        specs.append(spec)
                if settings.shm_size is not None:
                    specs.append(mnt.shm_mount(settings.shm_size))
                spec = rr.RunSpec(
                    rootfs=rootfs, args=argv, env=[f"{k}={v}" for k, v in run_env.items()], cwd=cwd,
                    uid=u.uid if u else 0, gid=u.gid if u else 0,
                    additional_gids=tuple(u.additional_gids) if u else (),
                    mounts=tuple(specs), network="none" if network == "none" else "host",
                    hostname=BUILD_HOSTNAME, extra_hosts=settings.add_hosts)
                try:
                    status = run_isolated(spec, lambda data: self.b.o.progress.output(pstep, data),
                                          self.b.slots, settings.ulimits, self.b.notes)
                except BuildError as err:
                    raise BuildError(f"{where}: {ins.original}: {err}") from None
            finally:
                for undo in reversed(cleanup):
                    undo()
            if status != 0:
                self.b.o.progress.flush(pstep)
                raise BuildError(f"{where}: {ins.original}: did not complete successfully: exit code {status}",
                                 output=tuple(pstep.tail))
        return Step(described, key, action)

    def _mounts(self, raws, where: str, env: dict[str, str]) -> list[mnt.RunMount]:
        try:
            parsed = [parse_mount(raw.spec, lambda v: lexer.process_word(v, env, self.b.plan.escape))
                      for raw in raws]
        except DockerfileError as err:
            raise err.at(self.b.plan.file, int(where.rsplit(":", 1)[1])) from None
        o = self.b.o
        site = mnt.MountSite(where=where, workdir=self.cfg.get("WorkingDir") or "/", workroot=self.b.workroot,
                             context=o.context, excluded=o.excluded, secrets=o.secrets, ssh=o.ssh,
                             cache=o.cache, source_root=self.b.source_root)
        return mnt.run_mounts(parsed, site, env)


CONFIG_STEPS: dict[type, Callable] = {
    di.Env: StageRun.do_env, di.Arg: StageRun.do_arg, di.Label: StageRun.do_label, di.User: StageRun.do_user,
    di.Volume: StageRun.do_volume, di.Expose: StageRun.do_expose, di.StopSignal: StageRun.do_stopsignal,
    di.Shell: StageRun.do_shell, di.Cmd: StageRun.do_cmd, di.Entrypoint: StageRun.do_entrypoint,
    di.Healthcheck: StageRun.do_healthcheck, di.OnBuild: StageRun.do_onbuild,
    di.Maintainer: StageRun.do_maintainer}
LAYER_STEPS: dict[type, Callable] = {
    di.Workdir: StageRun.do_workdir, di.Copy: StageRun.do_copy, di.Add: StageRun.do_copy, di.Run: StageRun.do_run}


def _json(args: list[str]) -> str:
    import json
    return json.dumps(list(args))


def _chmod(value: str | None, where: str):
    if value is None:
        return None
    try:
        return parse_chmod(value)
    except DockerfileError as err:
        raise BuildError(f"{where}: {err}") from None


def _exclude_matcher(patterns: list[str], where: str):
    """COPY --exclude patterns as a predicate on paths relative to a source."""
    if not patterns:
        return cp._never
    try:
        return ignore.Matcher(ignore.read("\n".join(patterns), f"{where}: --exclude")).matches
    except OrcaError as err:
        raise BuildError(str(err)) from None


def _parent_paths(pattern: str, sources: list) -> dict[str, str]:
    """COPY --parents: the part of each source kept under the destination,
    its whole path or what follows a /./ pivot in the pattern that chose it."""
    pivot = posixpath.normpath(pattern.split("/./", 1)[0].lstrip("/")) if "/./" in pattern else "."
    return {src.rel: posixpath.relpath(src.rel, pivot) for src in sources}


def build(opts: BuildOptions) -> BuildResult:
    return Builder(opts).run()


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
    progress = req.progress
    progress.redact = tuple(Path(p).read_bytes().strip() for p in req.secrets.values())
    opts = BuildOptions(context=context, plan=loaded.plan, layout=Path(req.layout),
                        cache=req.cache or CacheStore(req.cache_dir), progress=progress, tags=req.tags,
                        build_args=req.build_args, global_args=loaded.global_args, bases=loaded.bases,
                        no_cache=req.no_cache, no_cache_stages=req.no_cache_stages, secrets=req.secrets,
                        ssh=req.ssh, run=req.run, labels=req.labels, annotations=req.annotations, pull=req.pull,
                        platform=platform, jobs=req.jobs,
                        excluded=context_filter(context, dockerfile),
                        source_date_epoch=int(sde_text) if sde_text else None, registry=req.registry,
                        load=req.load, contexts=req.contexts)
    with progress.capturing_logs():
        return build(opts)
