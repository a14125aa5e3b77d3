"""The build graph: stages, their dependencies, and which of them to build.

The parser's instructions are turned into a small uniform view (Instr) so the
executor depends on one shape; stage references (FROM stage, COPY --from,
RUN --mount from=) become edges, and only stages reachable from the target
are kept, in an order where every stage comes after what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orca.errors import BuildError


@dataclass
class Instr:
    kind: str                      # upper-case keyword
    line: int
    text: str                      # the instruction as written (progress, history)
    args: list[str] = field(default_factory=list)
    json_form: bool = False
    flags: dict = field(default_factory=dict)
    pairs: list[tuple[str, str | None]] = field(default_factory=list)  # ENV/LABEL/ARG
    mounts: list = field(default_factory=list)                         # RUN --mount
    heredocs: list = field(default_factory=list)                       # (name, body, expand)
    source: object = None          # the parser's own instruction object


@dataclass
class Stage:
    index: int
    name: str | None
    base: str                      # as written; expanded with global args at plan time
    platform: str | None
    line: int
    instrs: list[Instr]

    @property
    def label(self) -> str:
        return self.name or f"stage-{self.index}"


@dataclass
class Plan:
    file: str
    meta_args: list[tuple[str, str | None]]
    stages: list[Stage]
    target: int
    order: list[int]               # stages to build, dependencies first
    deps: dict[int, set[int]]
    escape: str = "\\"

    def stage_ref(self, ref: str) -> int | None:
        """The stage a FROM/--from value names (name, case-insensitive, or index)."""
        return stage_index(self.stages, ref)


def stage_index(stages: list[Stage], ref: str) -> int | None:
    low = ref.lower()
    for st in stages:
        if st.name == low:
            return st.index
    if ref.isdigit() and int(ref) < len(stages):
        return int(ref)
    return None


def stage_deps(stages: list[Stage], st: Stage, base: str, file: str) -> set[int]:
    deps = set()
    idx = stage_index(stages[:st.index], base)
    if idx is not None:
        deps.add(idx)
    for ins in st.instrs:
        refs = []
        if ins.kind in ("COPY", "ADD") and ins.flags.get("from"):
            refs.append(ins.flags["from"])
        for m in ins.mounts:
            if getattr(m, "from_", None) or getattr(m, "from_stage", None):
                refs.append(getattr(m, "from_", None) or m.from_stage)
        for ref in refs:
            idx = stage_index(stages, ref)
            if idx is None:
                continue  # an image reference
            if idx >= st.index:
                raise BuildError(f"{file}:{ins.line}: cannot copy from stage {ref!r}, "
                                 f"it needs to be defined before current stage")
            deps.add(idx)
    return deps


def make_plan(file: str, meta_args, stages: list[Stage], bases: list[str], target: str | None) -> Plan:
    """bases: each stage's base after global-arg expansion."""
    if not stages:
        raise BuildError(f"{file}: no build stage")
    if target is None:
        tidx = len(stages) - 1
    else:
        tidx = stage_index(stages, target) if not target.isdigit() else None
        if tidx is None:
            raise BuildError(f"{file}: target stage {target!r} could not be found")
    deps = {st.index: stage_deps(stages, st, bases[st.index], file) for st in stages}
    order: list[int] = []
    seen: set[int] = set()

    def visit(i: int) -> None:
        if i in seen:
            return
        seen.add(i)
        for d in sorted(deps[i]):
            visit(d)
        order.append(i)
    visit(tidx)
    return Plan(file, list(meta_args), stages, tidx, order, {i: deps[i] for i in order})


@dataclass
class Loaded:
    plan: Plan
    global_args: dict[str, str]
    bases: list[str]


def platform_args(platform) -> dict[str, str]:
    plat = "/".join(p for p in (platform.os, platform.architecture, platform.variant) if p)
    out = {}
    for prefix in ("BUILD", "TARGET"):
        out.update({f"{prefix}PLATFORM": plat, f"{prefix}OS": platform.os,
                    f"{prefix}ARCH": platform.architecture, f"{prefix}VARIANT": platform.variant or ""})
    return out


def load_plan(text: str, file: str, build_args: dict[str, str], target: str | None, platform) -> Loaded:
    """Parse a Dockerfile, evaluate the global ARGs and expand each FROM with them."""
    from orca.dockerfile import lexer, parser
    parsed = parser.parse(text, file)
    escape = getattr(parsed, "escape", "\\") or "\\"
    scope = platform_args(platform)
    global_args: dict[str, str] = {}
    meta = []
    for arg in _meta_args(parsed):
        for name, default in _pairs(arg):
            meta.append((name, default))
            if name in build_args:
                value = build_args[name]
            elif default is not None:
                value = lexer.process_word(default, {**scope, **global_args}, escape)
            else:
                continue
            global_args[name] = value
    stages, bases = [], []
    for i, raw in enumerate(parsed.stages):
        st = Stage(i, getattr(raw, "name", None), raw.base, getattr(raw, "platform", None),
                   getattr(raw, "line", 0), [to_instr(x) for x in _instructions(raw)])
        stages.append(st)
        bases.append(lexer.process_word(st.base, {**scope, **global_args}, escape))
    plan = make_plan(file, meta, stages, bases, target)
    plan.escape = escape
    return Loaded(plan, global_args, bases)


def parse_triggers(triggers: list[str], file: str, line: int) -> list[Instr]:
    """ONBUILD triggers of a base image, parsed as instructions of the stage."""
    from orca.dockerfile import parser
    parsed = parser.parse("FROM scratch\n" + "\n".join(triggers) + "\n", f"{file} (ONBUILD)")
    out = [to_instr(x) for x in _instructions(parsed.stages[0])]
    for ins in out:
        ins.line = line
    return out


def _meta_args(parsed):
    return getattr(parsed, "meta_args", None) or getattr(parsed, "args", None) or []


def _instructions(stage):
    return getattr(stage, "instructions", None) or getattr(stage, "commands", None) or []


def _pairs(ins) -> list[tuple[str, str | None]]:
    for attr in ("pairs", "args", "env", "labels"):
        value = getattr(ins, attr, None)
        if value and isinstance(value, (list, tuple)) and isinstance(value[0], (list, tuple)):
            return [(k, v) for k, v, *_ in value]
        if isinstance(value, dict):
            return list(value.items())
    return []


def to_instr(x) -> Instr:
    """The parser's instruction object seen through the one shape the executor uses."""
    kind = (getattr(x, "keyword", None) or type(x).__name__.replace("Instruction", "")).upper()
    line = getattr(x, "line", None) or getattr(x, "start_line", 0)
    text = getattr(x, "original", None) or getattr(x, "text", None) or kind
    args = list(getattr(x, "cmd", None) or getattr(x, "args", None) or getattr(x, "command", None) or [])
    if isinstance(args, str):
        args = [args]
    if kind in ("COPY", "ADD"):
        args = list(getattr(x, "sources", [])) + [getattr(x, "dest")]
    elif kind in ("USER", "WORKDIR", "STOPSIGNAL", "MAINTAINER"):
        value = getattr(x, "value", None) or getattr(x, "user", None) or getattr(x, "path", None) \
            or getattr(x, "signal", None) or getattr(x, "name", None)
        args = [value] if value is not None else args
    elif kind == "ONBUILD":
        args = [getattr(x, "expression", None) or getattr(x, "trigger", None) or text.split(None, 1)[1]]
    flags = {}
    for name in ("from_", "from_stage", "chown", "chmod", "checksum", "network", "link", "unpack"):
        value = getattr(x, name, None)
        if value is not None:
            flags[name.rstrip("_").replace("from_stage", "from")] = value
    if kind == "HEALTHCHECK":
        flags["healthcheck"] = _healthcheck(x)
    return Instr(kind=kind, line=line, text=text, args=args,
                 json_form=bool(getattr(x, "json_form", None) or getattr(x, "exec_form", None)
                                or getattr(x, "prepend_shell", True) is False),
                 flags=flags, pairs=_pairs(x) if kind in ("ENV", "LABEL", "ARG") else [],
                 mounts=list(getattr(x, "mounts", None) or []),
                 heredocs=[(h.name, h.content, h.expand) for h in getattr(x, "heredocs", None) or []
                           if kind in ("COPY", "ADD")],
                 source=x)


def _healthcheck(x) -> dict:
    out = {"Test": list(getattr(x, "test", None) or [])}
    for key, attr in (("Interval", "interval"), ("Timeout", "timeout"), ("StartPeriod", "start_period"),
                      ("StartInterval", "start_interval"), ("Retries", "retries")):
        value = getattr(x, attr, None)
        if value:
            out[key] = value
    return out
