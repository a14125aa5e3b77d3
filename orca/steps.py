"""What each Dockerfile instruction does to a stage, keyed on the parser's
instruction types.

A config-only instruction (ENV, ARG, LABEL, USER, CMD, ...) changes the
stage's image config and history at once.  A layer instruction (WORKDIR,
COPY, ADD, RUN) becomes a Step: its history entry and cache keys, worked out
without touching a rootfs, and the change it makes, applied only when the
cache misses.  The stage (orca.execute.StageRun) decides which.
"""

from __future__ import annotations

import os
import posixpath
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from umoci_py.errors import UmociError

from orca.cache import digest_of, step_key
from orca.dockerfile import ignore, lexer
from orca.dockerfile import instructions as di
from orca.dockerfile.instructions import parse_chmod, parse_mount, parse_ports
from orca.errors import BuildError, DockerfileError, OrcaError

TYPE_CHECKING = False  # typing's, without importing typing: ~2 ms of every orca-build start
if TYPE_CHECKING:
    from orca import mounts as mnt
    from orca.execute import StageRun

DEFAULT_SHELL = ["/bin/sh", "-c"]


@dataclass
class Step:
    """What a layer instruction (RUN, COPY, ADD, WORKDIR) does, worked out
    before the cache is asked: nothing is read or run until apply."""
    history: str                                  # created_by of its history entry
    key: str                                      # the chained cache key: the quick look-up
    apply: Callable[[Path, object], None]         # (rootfs, progress step): make the change
    content_key: Callable[[], str] | None = None  # COPY --from: the key of the copied content
    link: bool = False                            # --link: the layer is made apart from the stage


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


# config-only instructions: each changes the stage's config and history

def env_step(run: StageRun, ins: di.Env) -> None:
    env = run.env()
    pairs = [(run.x(ins, k, env), run.x(ins, v or "", env)) for k, v in ins.pairs]
    for k, v in pairs:
        _set_env(run.image.config, k, v)
    run.history("ENV " + " ".join(f"{k}={v}" for k, v in pairs), True)


def arg_step(run: StageRun, ins: di.Arg) -> None:
    shown = []
    for name, default in ((a.name, a.default) for a in ins.args):
        name = run.x(ins, name)
        if name in run.b.o.build_args:
            value = run.b.o.build_args[name]
        elif default is not None:
            value = run.x(ins, default)
        elif name in run.b.global_args:
            value = run.b.global_args[name]
        else:
            shown.append(name)
            continue
        run.args[name] = value
        shown.append(f"{name}={value}")
    run.history("ARG " + " ".join(shown), True)


def label_step(run: StageRun, ins: di.Label) -> None:
    env = run.env()
    labels = run.cfg.setdefault("Labels", {}) or {}
    pairs = [(run.x(ins, k, env), run.x(ins, v or "", env)) for k, v in ins.pairs]
    labels.update(pairs)
    run.cfg["Labels"] = labels
    run.history("LABEL " + " ".join(f"{k}={v}" for k, v in pairs), True)


def user_step(run: StageRun, ins: di.User) -> None:
    run.cfg["User"] = run.x(ins, ins.user)
    run.history(f"USER {run.cfg['User']}", True)


def volume_step(run: StageRun, ins: di.Volume) -> None:
    vols = [run.x(ins, a) for a in ins.paths]
    run.cfg.setdefault("Volumes", {})
    for v in vols:
        run.cfg["Volumes"][v] = {}
    run.history("VOLUME " + ("[" + " ".join(vols) + "]"), True)


def expose_step(run: StageRun, ins: di.Expose) -> None:
    ports = []
    for a in ins.ports:
        try:
            words = lexer.process_words(a, run.env(), run.b.plan.escape)
            ports += parse_ports(words)
        except DockerfileError as err:
            raise err.at(run.b.plan.file, ins.line) from None
    run.cfg.setdefault("ExposedPorts", {})
    for p in ports:
        run.cfg["ExposedPorts"][p] = {}
    run.history("EXPOSE [" + " ".join(sorted(ports)) + "]", True)


def stopsignal_step(run: StageRun, ins: di.StopSignal) -> None:
    run.cfg["StopSignal"] = run.x(ins, ins.signal)
    run.history(f"STOPSIGNAL {run.cfg['StopSignal']}", True)


def shell_step(run: StageRun, ins: di.Shell) -> None:
    run.cfg["Shell"] = list(ins.shell)
    run.history("SHELL " + _json(ins.shell), True)


def _argv(run: StageRun, ins: di.Run | di.Cmd | di.Entrypoint) -> list[str]:
    if not ins.shell_form:
        return list(ins.cmd)
    return list(run.cfg.get("Shell") or DEFAULT_SHELL) + [" ".join(ins.cmd)]


def cmd_step(run: StageRun, ins: di.Cmd) -> None:
    run.cfg["Cmd"] = _argv(run, ins)
    run.cfg["ArgsEscaped"] = True
    run.cmd_set = True
    run.history("CMD " + _json(run.cfg["Cmd"]), True)


def entrypoint_step(run: StageRun, ins: di.Entrypoint) -> None:
    run.cfg["Entrypoint"] = _argv(run, ins)
    if not run.cmd_set:
        run.cfg.pop("Cmd", None)
    run.history("ENTRYPOINT " + _json(run.cfg["Entrypoint"]), True)


def healthcheck_step(run: StageRun, ins: di.Healthcheck) -> None:
    run.cfg["Healthcheck"] = {"Test": list(ins.test), "Interval": ins.interval, "Timeout": ins.timeout,
                               "StartPeriod": ins.start_period, "StartInterval": ins.start_interval,
                               "Retries": ins.retries}
    run.history(ins.original, True)


def onbuild_step(run: StageRun, ins: di.OnBuild) -> None:
    run.cfg.setdefault("OnBuild", [])
    run.cfg["OnBuild"] = (run.cfg["OnBuild"] or []) + [ins.expression]


def maintainer_step(run: StageRun, ins: di.Maintainer) -> None:
    run.image.config["author"] = ins.name
    run.history(f"MAINTAINER {ins.name}", True)


# layer instructions: each returns its Step

def workdir_step(run: StageRun, ins: di.Workdir) -> Step:
    path = run.x(ins, ins.path)
    path = posixpath.normpath(posixpath.join(run.cfg.get("WorkingDir") or "/", path))
    run.cfg["WorkingDir"] = path
    key = step_key(run.key, {"kind": "WORKDIR", "path": path, "user": run.cfg.get("User", "")},
                   {}, run.b.platform_str)

    def action(rootfs: Path, _step) -> None:
        if path != "/":
            from orca.copy import make_dirs

            owner = _owner(rootfs, run.cfg.get("User") or "")
            make_dirs(rootfs, path, owner)
    return Step(f"WORKDIR {path}", key, action)


def _owner(rootfs: Path | None, spec: str) -> tuple[int, int]:
    if not spec:
        return 0, 0
    from umoci_py.bundle import resolve_user  # with the layer code, for steps that run
    try:
        u = resolve_user(spec, rootfs)
    except UmociError as err:
        raise BuildError(f"{err}") from None
    return u.uid, u.gid


def copy_step(run: StageRun, ins: di.Copy) -> Step:  # and ADD
    # COPY's machinery (its owner xattrs, securejoin...), imported by builds
    # that have a COPY or ADD: ~2.7 ms of a cached build's start without one
    from orca import copy as cp

    add = isinstance(ins, di.Add)
    where = run.where(ins)
    srcs = [run.x(ins, a) for a in ins.sources]
    dest = run.x(ins, ins.dest)
    chown = run.x(ins, ins.chown) if ins.chown else None
    chmod_s = run.x(ins, ins.chmod) if ins.chmod else None
    chmod = _chmod(chmod_s, where)
    checksum = run.x(ins, ins.checksum) if add and ins.checksum else None
    excludes = [run.x(ins, e) for e in ins.exclude]
    exclude = _exclude_matcher(excludes, where)
    parents = ins.parents
    from_ = ins.from_
    workdir = run.cfg.get("WorkingDir") or "/"
    excluded = run.b.excluded
    what = f"{where}: {ins.keyword}"
    tmp = Path(tempfile.mkdtemp(dir=run.b.workroot))
    identity = None
    if ins.heredocs:
        for doc in ins.heredocs:
            (tmp / doc.name).write_text(run.x(ins, doc.content) if doc.expand else doc.content)
            os.chmod(tmp / doc.name, 0o644)
        root, excluded = tmp, cp._never
        srcs = [doc.name for doc in ins.heredocs]
    elif from_:
        root, excluded = None, cp._never  # the source stage is materialized only on a miss
        identity = run.b.source_identity(from_, where)
    else:
        root = run.b.o.context
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
                root = run.b.source_root(from_, where)[0]
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
    parent = run.key
    if link:
        instr["link"] = True
        if numeric_owner:
            parent = digest_of({"link": True, "source_date_epoch": run.b.source_date_epoch})
    content = identity or cp.content_digest(*sources(), excluded, exclude=exclude,
                                            digests=run.b.context_digests())
    key = step_key(parent, instr, {}, run.b.platform_str, content)
    # COPY --from: BuildKit merges equal results, so the content of the
    # selected files (not which build of the stage made them) is the key
    # that chains on; the stage key is only the quick first look-up.
    slow = (lambda: step_key(parent, instr, {}, run.b.platform_str,
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
            users = None if numeric_owner else run.rootfs()
        owner = _owner(users, chown) if chown else None
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


def run_step(run: StageRun, ins: di.Run) -> Step:
    where = run.where(ins)
    if ins.security not in (None, "sandbox"):
        raise BuildError(f"{where}: RUN --security={ins.security}: not allowed "
                         f"(a rootless build has no privileges to grant)")
    argv = _argv(run, ins)
    env = run.env()
    settings = run.b.o.run
    network = ins.network or settings.network
    mounts = _mounts(run, ins, env)
    script = ins.script_file
    if script is not None:
        from orca import mounts as mnt
        mounts.append(mnt.script_mount(script, run.b.workroot))
        argv = [f"{mnt.PIPES}/{script.name}"]
    user = run.cfg.get("User") or ""
    cwd = run.cfg.get("WorkingDir") or "/"
    instr = {"kind": "RUN", "argv": argv, "user": user, "cwd": cwd, "network": network,
             "mounts": [m.key for m in mounts], **settings.key()}
    run_env = dict(env)
    for m in mounts:
        if m.env:
            run_env[m.env[0]] = m.env[1]
    key = step_key(run.key, instr, env, run.b.platform_str)
    shown = [f"{k}={v}" for k, v in run.args.items()
             if k.lower() not in ("http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy")]
    prefix = f"|{len(shown)} {' '.join(shown)} " if shown else ""
    described = f"RUN {prefix}{' '.join(argv)}"

    def action(rootfs: Path, pstep) -> None:
        # the spec's module only: the sandbox and tracer (~30 ms of imports) are the RUN helper's
        from runrootless.spec import RunSpec
        from umoci_py.bundle import resolve_user

        from orca.copy import make_dirs
        from orca.runstep import BUILD_HOSTNAME, run_isolated
        u = resolve_user(user, rootfs) if user else None
        make_dirs(rootfs, cwd, None)
        specs, cleanup = [], []
        try:
            for m in mounts:
                spec, undo = m.prepare(rootfs)
                cleanup.append(undo)
                if spec is not None:
                    specs.append(spec)
            if settings.shm_size is not None:
                from orca import mounts as mnt  # --shm-size's mount: RUNs without mounts never load it
                specs.append(mnt.shm_mount(settings.shm_size))
            spec = RunSpec(
                rootfs=rootfs, args=argv, env=[f"{k}={v}" for k, v in run_env.items()], cwd=cwd,
                uid=u.uid if u else 0, gid=u.gid if u else 0,
                additional_gids=tuple(u.additional_gids) if u else (),
                mounts=tuple(specs), network="none" if network == "none" else "host",
                hostname=BUILD_HOSTNAME, extra_hosts=settings.add_hosts)
            try:
                status = run_isolated(spec, lambda data: run.b.o.progress.output(pstep, data),
                                      run.b.slots, settings.ulimits, run.b.notes, run.b.helpers)
            except BuildError as err:
                raise BuildError(f"{where}: {ins.original}: {err}") from None
        finally:
            for undo in reversed(cleanup):
                undo()
        if status != 0:
            run.b.o.progress.flush(pstep)
            raise BuildError(f"{where}: {ins.original}: did not complete successfully: exit code {status}",
                             output=tuple(pstep.tail))
    return Step(described, key, action)


def _mounts(run: StageRun, ins: di.Run, env: dict[str, str]) -> list[mnt.RunMount]:
    """RUN --mount, its values expanded with the step's environment."""
    if not ins.mounts:
        return []
    from orca import mounts as mnt  # their set-up code, for RUNs that have mounts
    try:
        parsed = [parse_mount(raw.spec, lambda v: lexer.process_word(v, env, run.b.plan.escape))
                  for raw in ins.mounts]
    except DockerfileError as err:
        raise err.at(run.b.plan.file, ins.line) from None
    o = run.b.o
    site = mnt.MountSite(where=run.where(ins), workdir=run.cfg.get("WorkingDir") or "/", workroot=run.b.workroot,
                         context=o.context, excluded=run.b.excluded, secrets=o.secrets, ssh=o.ssh,
                         cache=o.cache, source_root=run.b.source_root, digests=run.b.context_digests())
    return mnt.run_mounts(parsed, site, env)


# dispatch: the parser's instruction type -> its step (ADD is COPY's)
CONFIG_STEPS: dict[type, Callable[[StageRun, di.Instruction], None]] = {
    di.Env: env_step, di.Arg: arg_step, di.Label: label_step, di.User: user_step, di.Volume: volume_step,
    di.Expose: expose_step, di.StopSignal: stopsignal_step, di.Shell: shell_step, di.Cmd: cmd_step,
    di.Entrypoint: entrypoint_step, di.Healthcheck: healthcheck_step, di.OnBuild: onbuild_step,
    di.Maintainer: maintainer_step}
LAYER_STEPS: dict[type, Callable[[StageRun, di.Instruction], Step]] = {
    di.Workdir: workdir_step, di.Copy: copy_step, di.Add: copy_step, di.Run: run_step}


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
        return ignore.never
    try:
        return ignore.Matcher(ignore.read("\n".join(patterns), f"{where}: --exclude")).matches
    except OrcaError as err:
        raise BuildError(str(err)) from None


def _parent_paths(pattern: str, sources: list) -> dict[str, str]:
    """COPY --parents: the part of each source kept under the destination,
    its whole path or what follows a /./ pivot in the pattern that chose it."""
    pivot = posixpath.normpath(pattern.split("/./", 1)[0].lstrip("/")) if "/./" in pattern else "."
    return {src.rel: posixpath.relpath(src.rel, pivot) for src in sources}
