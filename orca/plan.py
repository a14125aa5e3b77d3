"""The build graph: stages, their dependencies, and which of them to build.

A stage holds the parser's own instruction objects (orca.dockerfile.instructions);
stage references (FROM stage, COPY --from, RUN --mount from=) become edges,
and only stages reachable from the target are kept, in an order where every
stage comes after what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from orca.dockerfile.instructions import Copy, Instruction
from orca.errors import BuildError


@dataclass
class Stage:
    """A stage of the plan: its FROM and instructions."""
    index: int
    name: str | None
    base: str                      # as written; expanded with global args at plan time
    platform: str | None
    line: int
    instrs: list[Instruction]

    @property
    def label(self) -> str:
        return self.name or f"stage-{self.index}"


@dataclass
class Plan:
    """The stages to build, in order, with what each reads."""
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
        if isinstance(ins, Copy) and ins.from_:  # and ADD
            refs.append(ins.from_)
        refs += [m.from_ for m in getattr(ins, "mounts", ()) if m.from_]
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
    """A Dockerfile made into a plan, with its global ARG values and each stage's FROM expanded."""
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
    parsed = parser.parse_dockerfile(text, file)
    escape = parsed.directives.escape
    scope = platform_args(platform)
    global_args: dict[str, str] = {}
    meta = []
    for arg in parsed.meta_args:
        for a in arg.args:
            meta.append((a.name, a.default))
            if a.name in build_args:
                global_args[a.name] = build_args[a.name]
            elif a.default is not None:
                global_args[a.name] = lexer.process_word(a.default, {**scope, **global_args}, escape)
    stages, bases = [], []
    for raw in parsed.stages:
        st = Stage(raw.index, raw.base.name, raw.base.image, raw.base.platform, raw.base.line,
                   list(raw.instructions))
        stages.append(st)
        bases.append(lexer.process_word(st.base, {**scope, **global_args}, escape))
    plan = make_plan(file, meta, stages, bases, target)
    plan.escape = escape
    return Loaded(plan, global_args, bases)


def parse_triggers(triggers: list[str], file: str, line: int) -> list[Instruction]:
    """ONBUILD triggers of a base image, parsed as instructions of the stage."""
    from orca.dockerfile import parser
    return [parser.parse_trigger(t, file, line) for t in triggers]

