"""Typed Dockerfile instructions and the grammars of their values.

The parser fills these dataclasses with the words as written: variables are
not expanded here (the builder expands them against the stage environment,
see notes §1.7).  Value grammars that the builder must re-check after
expansion (mount CSV, --chmod, durations, EXPOSE ports, signals) are
functions here so both sides use one implementation.

The parser makes these values once and nothing changes them afterwards.
dataclass() compiles the methods it generates for each class at every start
of orca-build, which for these ~30 classes was most of a fully cached build's
time in this module: so they are not frozen=True, and their __eq__ and
__repr__ are _Value's, written once.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from orca.errors import DockerfileError


class _Value:
    """Equality and repr by the dataclass fields, as dataclass() would
    generate them, for every class here (see the module's doc)."""

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(self))

    __hash__ = None  # equal by value and changeable: not hashable, as a dataclass with eq

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"{self.__class__.__qualname__}({shown})"


@dataclass(eq=False, repr=False)
class Heredoc(_Value):
    """A here-document: ``name`` is the delimiter (the file name in COPY/ADD).

    ``content`` is raw, ends with a newline, and has leading tabs already
    removed when the heredoc was written ``<<-``.  ``expand`` is False when
    the delimiter was quoted.
    """

    name: str
    content: str
    expand: bool = True
    chomp: bool = False
    fd: int = 0


@dataclass(eq=False, repr=False)
class Directives(_Value):
    """Parser directives found at the top of the file."""

    escape: str = "\\"
    syntax: str | None = None
    check: "CheckOptions" = field(default_factory=lambda: CheckOptions())


@dataclass(eq=False, repr=False)
class CheckOptions(_Value):
    """``# check=skip=A,B;error=true;experimental=all``."""

    skip: tuple[str, ...] = ()
    skip_all: bool = False
    error: bool = False
    experimental: tuple[str, ...] = ()
    experimental_all: bool = False


@dataclass(eq=False, repr=False)
class Warning(_Value):
    """A lint-style warning attached to a line (the build continues)."""

    rule: str
    message: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


# --- instructions -----------------------------------------------------------

@dataclass(kw_only=True, eq=False, repr=False)
class Instruction(_Value):
    """Common location data: ``line``..``end_line`` are 1-based and inclusive;
    ``original`` is the logical line (continuations joined, no heredoc bodies)."""

    # unannotated, so a class attribute and not a field: dataclass() knows a
    # ClassVar annotation only with typing imported, ~2 ms of every start
    keyword = ""
    line: int
    end_line: int
    original: str


@dataclass(kw_only=True, eq=False, repr=False)
class From(Instruction):
    """``FROM image [AS name]``."""

    keyword = "FROM"
    image: str
    platform: str | None = None
    name: str | None = None  # lower-cased stage name


@dataclass(eq=False, repr=False)
class Mount(_Value):
    """One ``RUN --mount``.  ``spec`` is the flag value as written, so the
    builder can call ``expanded`` once the stage environment is known."""

    spec: str
    type: str = "bind"
    target: str | None = None
    source: str | None = None
    from_: str | None = None
    readonly: bool = True
    id: str | None = None
    sharing: str | None = None
    required: bool = False
    size: int | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    env: str | None = None

    def expanded(self, expand: Callable[[str], str]) -> "Mount":
        return parse_mount(self.spec, expand)

    @property
    def effective_id(self) -> str | None:
        """The cache key id, secret id or ssh agent id per notes §1.11."""
        if self.type == "cache":
            return self.id or (posixpath.normpath(self.target) if self.target else None)
        if self.type == "secret":
            if self.source:
                return self.source
            return self.id or (posixpath.basename(self.target) if self.target else None)
        if self.type == "ssh":
            return self.id or "default"
        return self.id

    @property
    def effective_target(self) -> str | None:
        if self.target is None and self.type == "secret" and self.effective_id:
            return "/run/secrets/" + posixpath.basename(self.effective_id)
        return self.target

    @property
    def effective_mode(self) -> int | None:
        if self.mode is not None:
            return self.mode
        return {"secret": 0o400, "ssh": 0o600, "cache": 0o755}.get(self.type)


@dataclass(kw_only=True, eq=False, repr=False)
class Run(Instruction):
    """``cmd`` is what to execute: with ``shell_form`` it is one string for
    the stage's SHELL.  For a lone shebang heredoc (``RUN <<EOF`` whose body
    starts with ``#!``) ``script_file`` is that heredoc: write it 0755 at
    ``/dev/pipes/<name>`` and ``cmd`` is that path, run directly."""

    keyword = "RUN"
    cmd: tuple[str, ...]
    shell_form: bool
    mounts: tuple[Mount, ...] = ()
    network: str | None = None
    security: str | None = None
    heredocs: tuple[Heredoc, ...] = ()
    script_file: Heredoc | None = None


@dataclass(kw_only=True, eq=False, repr=False)
class Cmd(Instruction):
    """``CMD``: exec form or shell form."""

    keyword = "CMD"
    cmd: tuple[str, ...]
    shell_form: bool


@dataclass(kw_only=True, eq=False, repr=False)
class Entrypoint(Instruction):
    """``ENTRYPOINT``: exec form or shell form."""

    keyword = "ENTRYPOINT"
    cmd: tuple[str, ...]
    shell_form: bool


@dataclass(kw_only=True, eq=False, repr=False)
class Shell(Instruction):
    """``SHELL [...]``: the shell of later shell forms."""

    keyword = "SHELL"
    shell: tuple[str, ...]


@dataclass(kw_only=True, eq=False, repr=False)
class Env(Instruction):
    """``pairs`` are (key, value) as written, quotes included."""

    keyword = "ENV"
    pairs: tuple[tuple[str, str], ...]


@dataclass(kw_only=True, eq=False, repr=False)
class Label(Instruction):
    """``LABEL key=value ...``, quotes as written."""

    keyword = "LABEL"
    pairs: tuple[tuple[str, str], ...]


@dataclass(eq=False, repr=False)
class ArgDef(_Value):
    """One name of an ``ARG``, with its default if it has one."""
    name: str
    default: str | None = None  # None: declared without "="


@dataclass(kw_only=True, eq=False, repr=False)
class Arg(Instruction):
    """``ARG name[=default] ...``."""

    keyword = "ARG"
    args: tuple[ArgDef, ...]


@dataclass(kw_only=True, eq=False, repr=False)
class Expose(Instruction):
    """Ports as written; expand with ``process_words`` then ``parse_ports``."""

    keyword = "EXPOSE"
    ports: tuple[str, ...]


@dataclass(kw_only=True, eq=False, repr=False)
class Volume(Instruction):
    """``VOLUME``: the paths as written."""

    keyword = "VOLUME"
    paths: tuple[str, ...]


@dataclass(kw_only=True, eq=False, repr=False)
class User(Instruction):
    """``USER user[:group]``."""

    keyword = "USER"
    user: str


@dataclass(kw_only=True, eq=False, repr=False)
class Workdir(Instruction):
    """``WORKDIR path``."""

    keyword = "WORKDIR"
    path: str


@dataclass(kw_only=True, eq=False, repr=False)
class Copy(Instruction):
    """``sources`` are paths (or URLs for ADD); heredoc sources are in
    ``heredocs`` (file name = heredoc name, mode 0644)."""

    keyword = "COPY"
    sources: tuple[str, ...]
    dest: str
    heredocs: tuple[Heredoc, ...] = ()
    from_: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    exclude: tuple[str, ...] = ()
    parents: bool = False


@dataclass(kw_only=True, eq=False, repr=False)
class Add(Copy):
    """``ADD``: COPY plus URLs, archives and their options."""

    keyword = "ADD"
    checksum: str | None = None
    keep_git_dir: bool = False
    unpack: bool | None = None  # None: the default (local archives unpacked)


@dataclass(kw_only=True, eq=False, repr=False)
class StopSignal(Instruction):
    """``STOPSIGNAL signal``."""

    keyword = "STOPSIGNAL"
    signal: str


@dataclass(kw_only=True, eq=False, repr=False)
class Healthcheck(Instruction):
    """``test`` is ("NONE",), ("CMD-SHELL", text) or ("CMD", arg, ...);
    durations are nanoseconds, 0 when not given."""

    keyword = "HEALTHCHECK"
    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass(kw_only=True, eq=False, repr=False)
class OnBuild(Instruction):
    """``expression`` is what goes into Config.OnBuild; ``trigger`` is it parsed."""

    keyword = "ONBUILD"
    expression: str
    trigger: Instruction


@dataclass(kw_only=True, eq=False, repr=False)
class Maintainer(Instruction):
    """``MAINTAINER name`` (deprecated; a label of the image)."""

    keyword = "MAINTAINER"
    name: str


INSTRUCTION_TYPES: tuple[type[Instruction], ...] = (
    From, Run, Cmd, Entrypoint, Shell, Env, Label, Arg, Expose, Volume, User,
    Workdir, Copy, Add, StopSignal, Healthcheck, OnBuild, Maintainer)


@dataclass(eq=False, repr=False)
class Stage(_Value):
    """A build stage: its FROM and the instructions after it."""

    index: int
    base: From
    instructions: tuple[Instruction, ...]

    @property
    def name(self) -> str:
        """The stage name, or ``stage-N`` for an unnamed stage."""
        return self.base.name or f"stage-{self.index}"


@dataclass(eq=False, repr=False)
class Dockerfile(_Value):
    """A parsed Dockerfile: ``meta_args`` are the ARGs before the first FROM."""

    file: str
    directives: Directives
    meta_args: tuple[Arg, ...]
    stages: tuple[Stage, ...]
    warnings: tuple[Warning, ...] = ()

    def stage(self, name_or_index: str) -> Stage | None:
        """Find a stage by name (case-insensitive) or by index."""
        key = name_or_index.lower()
        for stage in self.stages:
            if stage.base.name == key:
                return stage
        if key.isdecimal() and int(key) < len(self.stages):
            return self.stages[int(key)]
        return None


# --- value grammars ---------------------------------------------------------

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_MOUNT_KEYS = ("type", "from", "source", "src", "target", "dst", "destination",
               "readonly", "ro", "readwrite", "rw", "id", "sharing", "required",
               "size", "mode", "uid", "gid", "env")
_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def parse_go_bool(value: str) -> bool | None:
    """strconv.ParseBool: None when ``value`` is not a boolean."""
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    return None


def suggest(word: str, choices) -> str:
    """A " (did you mean X?)" suffix when a choice is close to ``word``."""
    import difflib  # for error messages only

    close = difflib.get_close_matches(word.lower(), [c.lower() for c in choices], n=1, cutoff=0.6)
    if not close:
        return ""
    original = next(c for c in choices if c.lower() == close[0])
    return f" (did you mean {original}?)"


def parse_mount(spec: str, expand: Callable[[str], str] | None = None) -> Mount:
    """Parse a ``--mount`` CSV value.  Without ``expand`` (parse time),
    values holding ``$`` are kept as written and checked after expansion."""
    import csv  # for RUN --mount only

    try:
        fields = next(csv.reader([spec], strict=True), [])
    except csv.Error as err:
        raise DockerfileError(f"failed to parse csv mounts: {err}") from None
    m: dict = {"type": "bind"}
    ro_auto = True

    for fld in fields:
        key, eq, value = fld.partition("=")
        key = key.lower()
        if not eq:
            if key in ("readonly", "ro"):
                m["readonly"], ro_auto = True, False
            elif key in ("readwrite", "rw"):
                m["readonly"], ro_auto = False, False
            elif key == "required":
                if m["type"] not in ("secret", "ssh"):
                    raise DockerfileError(f"unexpected key '{key}' for mount type '{m['type']}'")
                m["required"] = True
            else:
                raise DockerfileError(f"invalid field '{fld}' must be a key=value pair")
            continue
        if key == "from" and "$" in value[:-1]:
            raise DockerfileError(
                f"'{key}' doesn't support variable expansion, define alias stage instead")
        if expand is not None:
            value = expand(value)
        deferred = expand is None and "$" in value
        if key == "type":
            if deferred:
                raise DockerfileError(f"variable expansion is not supported for mount type: {value}")
            if value.lower() not in MOUNT_TYPES:
                raise DockerfileError(f"unsupported mount type {value!r}" + suggest(value, MOUNT_TYPES))
            m["type"] = value.lower()
        elif key == "from":
            m["from_"] = value
        elif key in ("source", "src"):
            m["source"] = value
        elif key in ("target", "dst", "destination"):
            m["target"] = value
        elif key in ("readonly", "ro", "readwrite", "rw", "required"):
            flag = parse_go_bool(value)
            if flag is None and not deferred:
                raise DockerfileError(f"invalid value for {key}: {value}")
            if key == "required":
                if m["type"] not in ("secret", "ssh"):
                    raise DockerfileError(f"unexpected key '{key}' for mount type '{m['type']}'")
                m["required"] = bool(flag)
            else:
                m["readonly"] = bool(flag) if key in ("readonly", "ro") else not flag
                ro_auto = False
        elif key == "id":
            m["id"] = value
        elif key == "sharing":
            if m["type"] != "cache":
                raise DockerfileError(f"invalid cache sharing set for {m['type']} mount")
            if value.lower() not in ("shared", "private", "locked") and not deferred:
                raise DockerfileError(f"unsupported sharing value {value!r}")
            m["sharing"] = value.lower()
        elif key == "size":
            if m["type"] != "tmpfs":
                raise DockerfileError(f"unexpected key '{key}' for mount type '{m['type']}'")
            if not deferred:
                m["size"] = parse_ram_bytes(value, key)
        elif key in ("mode", "uid", "gid"):
            if not deferred:
                m[key] = _parse_uint(value, 8 if key == "mode" else 10, key)
        elif key == "env":
            m["env"] = value
        else:
            raise DockerfileError(f"unexpected key '{key}' in '{fld}'" + suggest(key, _MOUNT_KEYS))

    if m["type"] not in ("secret", "ssh", "cache"):
        for key in ("mode", "uid", "gid"):
            if key in m:
                raise DockerfileError(f"{key} not allowed for {m['type']!r} type mounts")
    if ro_auto:
        m["readonly"] = m["type"] not in ("cache", "tmpfs")
    if m["type"] == "cache":
        m.setdefault("sharing", "shared")
    if m["type"] == "secret":
        if "from_" in m:
            raise DockerfileError("secret mount should not have a from")
        if not (m.get("source") or m.get("target") or m.get("id")):
            raise DockerfileError("invalid secret mount. one of source, target required")
        if m.get("source") and m.get("id"):
            raise DockerfileError("both source and id can't be set")
    elif m["type"] != "ssh" and not m.get("target"):
        raise DockerfileError(f"mount target is required for {m['type']} mounts: {spec}")
    if m.get("target") and posixpath.normpath(m["target"]) in ("/", "//"):
        raise DockerfileError(f"invalid mount target {m['target']!r}: cannot mount over /")
    if "env" in m and m["type"] != "secret":
        raise DockerfileError(f"unexpected key 'env' for mount type '{m['type']}'")
    return Mount(spec=spec, **m)


def _parse_uint(value: str, base: int, key: str) -> int:
    digits = "01234567" if base == 8 else "0123456789"
    if not value or any(c not in digits for c in value) or int(value, base) >= 1 << 32:
        raise DockerfileError(f"invalid value {value} for {key}")
    return int(value, base)


# Patterns compiled on first use (by re's cache), not by every start of orca-build
_RAM_RE = r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$"


def parse_ram_bytes(value: str, what: str = "size") -> int:
    """go-units RAMInBytes: ``64m``, ``1g``, ``1024``, ``1.5GiB`` (binary units)."""
    match = re.match(_RAM_RE, value)
    if not match:
        raise DockerfileError(f"invalid value for {what}: {value}")
    try:
        number = float(match.group(1))
    except ValueError:
        raise DockerfileError(f"invalid value for {what}: {value}") from None
    power = " kmgtp".index((match.group(2) or " ").lower())
    return int(number * 1024 ** power)


_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
                   "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = r"(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)"


def parse_duration(value: str) -> int:
    """Go time.ParseDuration, in nanoseconds (``1m30s``, ``1.5h``, ``0``)."""
    text = value
    sign = 1
    if text[:1] in "+-" and text:
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return 0
    total = 0
    pos = 0
    while pos < len(text):
        match = re.compile(_DURATION_PART).match(text, pos)
        if not match or not (match.group(1) or match.group(2)):
            raise DockerfileError(f"time: invalid duration {value!r}")
        whole, frac, unit = match.groups()
        scale = _DURATION_UNITS[unit]
        total += int(whole or 0) * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        pos = match.end()
    if not text:
        raise DockerfileError(f"time: invalid duration {value!r}")
    return sign * total


def parse_ports(words) -> list[str]:
    """EXPOSE words to ``port/proto`` strings: ranges expanded, proto lower-cased."""
    ports: list[str] = []
    for word in words:
        port, _, proto = word.partition("/")
        proto = (proto or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise DockerfileError(f"invalid proto: {proto}")
        start, dash, end = port.partition("-")
        if not _is_port(start) or (dash and not _is_port(end)):
            raise DockerfileError(f"invalid containerPort: {port}")
        last = int(end) if dash else int(start)
        if last < int(start):
            raise DockerfileError(f"invalid range specified for container port: {port}")
        ports.extend(f"{n}/{proto}" for n in range(int(start), last + 1))
    return ports


def _is_port(text: str) -> bool:
    return text.isdecimal() and text.isascii() and 0 <= int(text) <= 65535


def check_signal(value: str) -> str:
    """Validate a STOPSIGNAL value: a number, or a name with or without SIG."""
    import signal  # its enum of names takes ~1 ms to build; only STOPSIGNAL needs it

    if value.isdecimal() and value.isascii():
        if int(value) > 0:
            return value
        raise DockerfileError(f"invalid signal: {value}")
    name = value.upper().removeprefix("SIG")
    base, sep, offset = name.partition("+" if "+" in name else "-")
    if "SIG" + name in signal.Signals.__members__ or name in ("RTMIN", "RTMAX"):
        return value
    if sep and offset.isdecimal() and 0 < int(offset) <= 15 and base in ("RTMIN", "RTMAX") \
            and (base, sep) in (("RTMIN", "+"), ("RTMAX", "-")):
        return value
    raise DockerfileError(f"invalid signal: {value}")


# --- --chmod ----------------------------------------------------------------

_WHO_BITS = {"u": 0o4700, "g": 0o2070, "o": 0o1007}
_CLAUSE = r"^([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)$"
_ACTION = r"([-+=])([ugo]|[rwxXst]*)"


@dataclass(eq=False, repr=False)
class Chmod(_Value):
    """A --chmod value: an octal mode or a symbolic mode like ``u+x,go-w``."""

    text: str
    octal: int | None = None

    def apply(self, mode: int, is_dir: bool) -> int:
        """The permission bits (07777) a file with ``mode`` gets."""
        if self.octal is not None:
            return self.octal
        mode &= 0o7777
        for clause in self.text.split(","):
            who, actions = re.match(_CLAUSE, clause).groups()
            who = who.replace("a", "ugo") or "ugo"
            mask = 0
            for w in who:
                mask |= _WHO_BITS[w]
            for op, perms in re.findall(_ACTION, actions):
                bits = _perm_bits(perms, mode, is_dir) & mask
                if op == "+":
                    mode |= bits
                elif op == "-":
                    mode &= ~bits
                else:
                    mode = (mode & ~mask) | bits
        return mode


def _perm_bits(perms: str, mode: int, is_dir: bool) -> int:
    if perms in ("u", "g", "o"):  # copy another class's rwx to every class
        shift = {"u": 6, "g": 3, "o": 0}[perms]
        rwx = (mode >> shift) & 0o7
        return rwx * 0o111
    bits = 0
    for p in perms:
        if p == "r":
            bits |= 0o444
        elif p == "w":
            bits |= 0o222
        elif p == "x" or (p == "X" and (is_dir or mode & 0o111)):
            bits |= 0o111
        elif p == "s":
            bits |= 0o6000
        elif p == "t":
            bits |= 0o1000
    return bits


def parse_chmod(value: str) -> Chmod:
    """Octal (at most 07777) or symbolic (``[ugoa]*[-+=][rwxXst]*``, comma-separated)."""
    if value and all(c in "01234567" for c in value):
        octal = int(value, 8)
        if octal > 0o7777:
            raise DockerfileError(f"invalid chmod parameter {value!r}: octal mode greater than 07777")
        return Chmod(value, octal)
    if value and all(re.match(_CLAUSE, c) for c in value.split(",")):
        return Chmod(value)
    raise DockerfileError(
        f"invalid chmod parameter {value!r}: expected an octal mode or a symbolic mode like u+x")
