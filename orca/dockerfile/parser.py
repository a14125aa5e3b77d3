"""Dockerfile text to typed instructions, following BuildKit's parser (notes §1.1-1.5, 1.10, 1.11).

Two passes: ``_Reader`` turns physical lines into logical-line nodes
(directives, comments, continuations, flags, per-instruction word grammar,
heredoc bodies); ``_Builder`` turns each node into an instruction dataclass,
checking flags and argument counts.  Nothing here touches the filesystem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from umoci_py import jsonload

from orca.dockerfile import instructions as ins
from orca.dockerfile.lexer import Lexer
from orca.errors import DockerfileError, SubstitutionError

MAX_LINE = 65536  # bufio.MaxScanTokenSize
_WS_SPLIT = re.compile(r"[\t\v\f\r ]+")
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC = re.compile(r"^(\d*)<<(-?)\s*([^<]*)$", re.ASCII)
_HEREDOC_OPERATOR = re.compile(r"^\d*<<-?$", re.ASCII)
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")
_ONBUILD_PREFIX = re.compile(r"^\s*ONBUILD\s*", re.IGNORECASE)
_NOT_STRINGS = "when using JSON array syntax, arrays must be comprised of strings only"


def parse_dockerfile(text: str, file: str = "Dockerfile") -> ins.Dockerfile:
    """Parse a whole Dockerfile into global ARGs and stages."""
    reader = _Reader(file)
    nodes = reader.read(text)
    builder = _Builder(file, reader.escape)
    meta_args: list[ins.Arg] = []
    stages: list[tuple[ins.From, list[ins.Instruction]]] = []
    for node in nodes:
        instruction = builder.build(node)
        if isinstance(instruction, ins.From):
            stages.append((instruction, []))
        elif stages:
            stages[-1][1].append(instruction)
        elif isinstance(instruction, ins.Arg):
            meta_args.append(instruction)
        else:
            raise DockerfileError(
                f"no build stage in current context: {instruction.keyword} must come after FROM",
                file, node.line)
        if isinstance(instruction, ins.Maintainer):
            reader.warnings.append(ins.Warning(
                "MaintainerDeprecated", "MAINTAINER instruction is deprecated in favor of using label",
                file, node.line))
    return ins.Dockerfile(
        file=file,
        directives=reader.directives(),
        meta_args=tuple(meta_args),
        stages=tuple(ins.Stage(i, base, tuple(body)) for i, (base, body) in enumerate(stages)),
        warnings=tuple(reader.warnings))


def parse_trigger(expression: str, file: str, line: int, escape: str = "\\") -> ins.Instruction:
    """Parse an ONBUILD trigger from an image config; located at ``file:line``."""
    reader = _Reader(file, escape=escape, directives=False)
    try:
        nodes = reader.read(expression)
        if len(nodes) != 1:
            raise DockerfileError(f"ONBUILD trigger must be one instruction: {expression!r}")
        instruction = _Builder(file, escape).build(nodes[0])
    except DockerfileError as err:
        raise err.at(file, line) from None
    if isinstance(instruction, (ins.OnBuild, ins.From, ins.Maintainer)):
        raise DockerfileError(f"{instruction.keyword} isn't allowed as an ONBUILD trigger", file, line)
    return replace(instruction, line=line, end_line=line)


def parse_heredoc_word(word: str, escape: str = "\\") -> tuple[str, bool, bool, int] | None:
    """``(name, expand, chomp, fd)`` if ``word`` is ``[fd]<<[-]DELIM``, else None."""
    match = _HEREDOC.match(word)
    if not match or not match.group(3):
        return None
    fd, dash, rest = match.groups()
    words = Lexer(escape, skip_unset_env=True).process_words(rest, {})
    if len(words) != 1:
        return None
    raw = Lexer(escape, raw_quotes=True, skip_unset_env=True).process_words(rest, {})
    # BuildKit turns expansion off when the delimiter holds quotes that lexing
    # removed, comparing only quote counts: an escaped delimiter (<<\EOF) expands.
    expand = _quotes(raw[0]) == _quotes(words[0])
    return words[0], expand, dash == "-", int(fd or 0)


def _quotes(word: str) -> int:
    return word.count("'") + word.count('"')


def _join_heredoc_operators(words: list[str]) -> list[str]:
    """A bare ``<<`` (``<<-``, ``3<<``) and the word after it are one heredoc
    word, as ``RUN <<  EOF`` is in BuildKit since its March 2025 parser."""
    out: list[str] = []
    i = 0
    while i < len(words):
        if _HEREDOC_OPERATOR.match(words[i]) and i + 1 < len(words):
            out.append(words[i] + words[i + 1])
            i += 2
        else:
            out.append(words[i])
            i += 1
    return out


@dataclass
class _Node:
    """One logical line of the Dockerfile, split into keyword, flags and arguments."""
    keyword: str  # lower case
    args: list[str]
    flags: list[str]
    json: bool
    original: str
    line: int
    end_line: int = 0
    heredocs: list[ins.Heredoc] = field(default_factory=list)
    sub: "_Node | None" = None  # the trigger of ONBUILD


# --- physical lines to nodes ------------------------------------------------

class _Reader:
    def __init__(self, file: str, escape: str = "\\", directives: bool = True):
        self.file = file
        self.escape = escape
        self.warnings: list[ins.Warning] = []
        self.seen: dict[str, tuple[str, int]] = {}
        self.directives_done = not directives

    def error(self, message: str, line: int) -> DockerfileError:
        return DockerfileError(message, self.file, line)

    def directives(self) -> ins.Directives:
        syntax = self.seen.get("syntax", (None, 0))[0]
        check = ins.CheckOptions()
        if "check" in self.seen:
            value, line = self.seen["check"]
            check = _parse_check(value, self.error, line)
        return ins.Directives(escape=self.escape, syntax=syntax, check=check)

    def directive(self, line: str, number: int) -> None:
        """Directives are ``# key=value`` comments before anything else."""
        if self.directives_done:
            return
        match = _DIRECTIVE.match(line) if line.startswith("#") else None
        key = match.group(1).lower() if match else None
        if key not in ("syntax", "escape", "check"):
            self.directives_done = True
            return
        if key in self.seen:
            raise self.error(f"only one {key} parser directive can be used", number)
        value = match.group(2)
        self.seen[key] = (value, number)
        if key == "escape":
            if value not in ("`", "\\"):
                raise self.error(f"invalid escape token '{value}' does not match ` or \\", number)
            self.escape = value
        if key == "check":
            _parse_check(value, self.error, number)

    def continued(self, line: str) -> tuple[str, bool]:
        """Strip a trailing escape (plus spaces/tabs); True when the line continues.

        ``\\\\`` at the end is an escaped escape and does not continue."""
        body = line.rstrip(" \t")
        if not body.endswith(self.escape):
            return line, False
        if len(body) >= 2 and body[-2] == self.escape:
            return line, False
        return body[:-1], True

    def read(self, text: str) -> list[_Node]:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        self.last_line_ends = text.endswith("\n")
        if lines and lines[0].startswith("\ufeff"):
            lines[0] = lines[0][1:]
        for number, raw in enumerate(lines, 1):
            if len(raw.encode()) >= MAX_LINE:
                raise self.error(f"dockerfile line greater than max allowed size of {MAX_LINE - 1}", number)
        nodes: list[_Node] = []
        i = 0
        while i < len(lines):
            raw = lines[i].rstrip("\r\n")
            i += 1
            start = i
            first = raw.lstrip()
            self.directive(first, start)
            if first.startswith("#"):
                continue
            line, more = self.continued(first)
            if not more and not line:
                continue
            empty_continuation = False
            while more and i < len(lines):
                raw = lines[i].rstrip("\r\n")
                i += 1
                if raw.lstrip().startswith("#"):
                    continue  # comments inside a continuation are dropped
                if not raw.strip():
                    empty_continuation = True
                    continue
                part, more = self.continued(raw)
                line += part
            if empty_continuation:
                self.warnings.append(ins.Warning(
                    "NoEmptyContinuation",
                    f"Empty continuation line found in: {line} "
                    "(empty continuation lines will become errors in a future release)",
                    self.file, i))
            try:
                node = self.node(line, start)
            except (DockerfileError, SubstitutionError) as err:
                raise self.error(err.message, start) from None
            if _can_contain_heredoc(node) and "<<" in line:
                i = self.read_heredocs(node, line, lines, i, start)
            node.end_line = i
            nodes.append(node)
        if not nodes:
            raise self.error("file with no instructions", max(len(lines), 1))
        return nodes

    def read_heredocs(self, node: _Node, line: str, lines: list[str], i: int, start: int) -> int:
        lexer = Lexer(self.escape, raw_quotes=True, raw_escapes=True, skip_unset_env=True)
        try:
            words = lexer.process_words(line, {})
        except SubstitutionError:
            return i
        for word in _join_heredoc_operators(words):
            try:
                found = parse_heredoc_word(word, self.escape)
            except SubstitutionError as err:
                raise self.error(err.message, start) from None
            if found is None:
                continue
            name, expand, chomp, fd = found
            body: list[str] = []
            while True:
                if i >= len(lines):
                    raise self.error(f"unterminated heredoc {name!r}", start)
                raw = lines[i]
                i += 1
                candidate = raw.rstrip("\r\n")
                if chomp:
                    candidate = candidate.lstrip("\t")
                if candidate == name:
                    break
                body.append(raw if i == len(lines) and not self.last_line_ends else raw + "\n")
            node.heredocs.append(ins.Heredoc(name, "".join(body), expand, chomp, fd))
        return i

    def node(self, line: str, number: int) -> _Node:
        parts = _WS_SPLIT.split(line.strip(), maxsplit=1)
        keyword = parts[0].lower()
        flags: list[str] = []
        rest = ""
        if len(parts) == 2:
            rest, flags = _extract_flags(parts[1], self.escape)
        rest = rest.strip()
        node = _Node(keyword, [], flags, False, line, number)
        if keyword in ("run", "cmd", "entrypoint", "shell"):
            node.args, node.json = _maybe_json(rest)
        elif keyword in ("add", "copy", "volume"):
            node.args, node.json = _maybe_json(rest)
            if not node.json and rest:
                node.args = _WS_SPLIT.split(rest)
        elif keyword in ("from", "expose"):
            node.args = _WS_SPLIT.split(rest) if rest else []
        elif keyword in ("env", "label"):
            node.args = self.name_val(rest, keyword)
        elif keyword == "arg":
            node.args = _parse_words(rest, self.escape)
        elif keyword in ("maintainer", "user", "workdir", "stopsignal"):
            node.args = [rest] if rest else []
        elif keyword == "healthcheck":
            kind, _, cmd = _split_first_word(rest)
            if kind:
                node.args, node.json = _maybe_json(cmd)
                node.args.insert(0, kind)
        elif keyword == "onbuild":
            if rest:
                node.sub = self.node(rest, number)
                node.args = [node.sub.keyword]
        else:
            node.args = [rest] if rest else []
        return node

    def name_val(self, rest: str, keyword: str) -> list[str]:
        """ENV/LABEL: ``k=v ...`` (quote-aware) or the legacy ``k rest of line``."""
        words = _parse_words(rest, self.escape)
        if not words:
            return []
        if "=" not in words[0]:
            parts = _WS_SPLIT.split(rest, maxsplit=1)
            if len(parts) < 2:
                raise DockerfileError(f"{keyword.upper()} must have two arguments")
            return parts
        out: list[str] = []
        for word in words:
            if "=" not in word:
                raise DockerfileError(
                    f"Syntax error - can't find = in {word!r}. Must be of the form: name=value")
            out.extend(word.split("=", 1))
        return out


def _split_first_word(rest: str) -> tuple[str, str, str]:
    sep = 0
    while sep < len(rest) and not rest[sep].isspace():
        sep += 1
    return rest[:sep], rest[sep:sep + 1], rest[sep:].lstrip()


def _can_contain_heredoc(node: _Node) -> bool:
    if node.keyword == "onbuild":
        return node.sub is not None and _can_contain_heredoc(node.sub)
    return node.keyword in ("run", "copy", "add") and not node.json


def _maybe_json(rest: str) -> tuple[list[str], bool]:
    """A JSON string array (exec form), else the whole text as one word."""
    if not rest:
        return [], False
    text = rest.lstrip()
    if text.startswith("["):
        try:
            value = jsonload.parse(text)
        except jsonload.Invalid:  # not JSON (NaN, nested too deeply...): the shell form, as BuildKit
            value = None
        if isinstance(value, list):
            if not all(isinstance(item, str) for item in value):
                raise DockerfileError(_NOT_STRINGS)
            return value, True
    return [rest], False


def _parse_words(rest: str, escape: str) -> list[str]:
    """Quote-aware words; quotes and escapes are kept for the lexer to process."""
    words: list[str] = []
    word = ""
    quote = ""
    in_word = False
    blank_ok = False
    i = 0
    while i < len(rest):
        ch = rest[i]
        i += 1
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                if i == len(rest):
                    continue  # a trailing escape is dropped
                word += ch
                ch = rest[i]
                i += 1
            word += ch
            continue
        if ch.isspace():
            if in_word and (blank_ok or word):
                words.append(word)
            word, in_word, blank_ok = "", False, False
            continue
        in_word = True
        if ch in "'\"":
            quote, blank_ok = ch, True
        elif ch == escape:
            if i == len(rest):
                continue
            word += ch
            ch = rest[i]
            i += 1
        word += ch
    if in_word and (blank_ok or word):
        words.append(word)
    return words


def _extract_flags(line: str, escape: str) -> tuple[str, list[str]]:
    """Leading ``--words`` (quotes honoured, removed); returns (rest, flags)."""
    flags: list[str] = []
    i = 0
    while True:
        while i < len(line) and line[i].isspace():
            i += 1
        if not line.startswith("--", i):
            return line[i:], flags
        word = ""
        quote = ""
        blank_ok = False
        while i < len(line):
            ch = line[i]
            if not quote and ch.isspace():
                break
            i += 1
            if quote and ch == quote:
                quote = ""
                continue
            if not quote and ch in "'\"":
                quote, blank_ok = ch, True
                continue
            if ch == escape:
                if i == len(line):
                    continue
                ch = line[i]
                i += 1
            word += ch
        if word == "--":
            return line[i:], flags
        if word or blank_ok:
            flags.append(word)
        if i >= len(line):
            return "", flags


def _parse_check(value: str, error, line: int) -> ins.CheckOptions:
    options: dict = {}
    value = value.strip()
    if not value:
        return ins.CheckOptions()
    for part in value.split(";", 2):
        key, eq, val = part.partition("=")
        key, val = key.strip(), val.strip()
        if not eq:
            raise error(f"invalid check option {part!r}", line)
        if key in ("skip", "experimental"):
            if val == "all":
                options[key + "_all"] = True
            else:
                options[key] = tuple(rule.strip() for rule in val.split(","))
        elif key == "error":
            flag = ins.parse_go_bool(val)
            if flag is None:
                raise error(f"failed to parse check option {part!r}: {val!r} is not a boolean", line)
            options["error"] = flag
        else:
            raise error(f"invalid check option {key!r}", line)
    return ins.CheckOptions(**options)


# --- nodes to instructions --------------------------------------------------

_FLAG_SPECS: dict[str, dict[str, str]] = {
    "from": {"platform": "string"},
    "run": {"mount": "strings", "network": "string", "security": "string"},
    "copy": {"from": "string", "chown": "string", "chmod": "string", "link": "bool",
             "parents": "bool", "exclude": "strings"},
    "add": {"chown": "string", "chmod": "string", "link": "bool", "exclude": "strings",
            "checksum": "string", "keep-git-dir": "bool", "unpack": "bool"},
    "healthcheck": {"interval": "string", "timeout": "string", "start-period": "string",
                    "start-interval": "string", "retries": "string"},
}
_KEYWORDS = ("FROM", "RUN", "CMD", "ENTRYPOINT", "SHELL", "ENV", "ARG", "LABEL", "EXPOSE",
             "VOLUME", "USER", "WORKDIR", "COPY", "ADD", "STOPSIGNAL", "HEALTHCHECK",
             "ONBUILD", "MAINTAINER")


def _parse_flags(words: list[str], spec: dict[str, str]) -> dict:
    """BuildKit's BFlags: typed, checked, duplicate-free (except "strings")."""
    values: dict = {}
    for word in words:
        if not word.startswith("--"):
            raise DockerfileError(f"arg should start with -- : {word}")
        name, eq, value = word[2:].partition("=")
        kind = spec.get(name)
        if kind is None:
            raise DockerfileError(f"unknown flag: --{name}"
                                  + ins.suggest("--" + name, ["--" + f for f in spec]))
        if name in values and kind != "strings":
            raise DockerfileError(f"duplicate flag specified: --{name}")
        if kind == "bool":
            if eq and not value:
                raise DockerfileError(f"missing a value on flag: --{name}")
            if value.lower() not in ("", "true", "false"):
                raise DockerfileError(f"expecting boolean value for flag --{name}, not: {value}")
            values[name] = value.lower() != "false"
        elif not eq:
            raise DockerfileError(f"missing a value on flag: --{name}")
        elif kind == "strings":
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    return values


def _at_least_one(node: _Node) -> None:
    if not node.args:
        raise DockerfileError(f"{node.keyword.upper()} requires at least one argument")


def _exactly_one(node: _Node) -> None:
    if len(node.args) != 1:
        raise DockerfileError(f"{node.keyword.upper()} requires exactly one argument")


class _Builder:
    def __init__(self, file: str, escape: str):
        self.file = file
        self.escape = escape

    def build(self, node: _Node) -> ins.Instruction:
        if node.keyword.upper() not in _KEYWORDS:
            keyword = node.original.strip().split(None, 1)[0]
            raise DockerfileError(f"unknown instruction: {keyword.upper()}"
                                  + ins.suggest(keyword, _KEYWORDS), self.file, node.line)
        try:
            flags = _parse_flags(node.flags, _FLAG_SPECS.get(node.keyword, {}))
            return getattr(self, "_" + node.keyword)(node, flags, dict(line=node.line, end_line=node.end_line or node.line,
                                            original=node.original))
        except DockerfileError as err:
            if err.file is not None:
                raise
            raise err.at(self.file, node.line) from None

    def _from(self, node, flags, loc):
        args = node.args
        name = None
        if len(args) == 3 and args[1].lower() == "as":
            name = args[2].lower()
            if not _STAGE_NAME.match(name):
                raise DockerfileError(f"invalid name for build stage: {args[2]!r}, "
                                      "name can't start with a number or contain symbols")
        elif len(args) != 1:
            raise DockerfileError("FROM requires either one or three arguments")
        return ins.From(image=args[0], platform=flags.get("platform"), name=name, **loc)

    def _run(self, node, flags, loc):
        _at_least_one(node)
        network = flags.get("network")
        if network is not None and network not in ("default", "none", "host"):
            raise DockerfileError(f"unsupported network mode {network!r}: expected default, none or host")
        security = flags.get("security")
        if security is not None and security not in ("sandbox", "insecure"):
            raise DockerfileError(f"unsupported security mode {security!r}: expected sandbox or insecure")
        mounts = tuple(ins.parse_mount(spec) for spec in flags.get("mount", []))
        heredocs = tuple(_chomped(h) for h in node.heredocs)
        cmd, shell_form, script = tuple(node.args), not node.json, None
        if heredocs:
            lone = parse_heredoc_word(node.args[0], self.escape)
            if lone is not None and len(heredocs) == 1:
                body = heredocs[0]
                if body.content.startswith("#!"):
                    script = body
                    cmd, shell_form = ("/dev/pipes/" + body.name,), False
                else:
                    cmd = (body.content,)
            else:
                cmd = (node.args[0] + "".join("\n" + h.content + h.name for h in heredocs),)
        return ins.Run(cmd=cmd, shell_form=shell_form, mounts=mounts, network=network,
                       security=security, heredocs=heredocs, script_file=script, **loc)

    def _cmd(self, node, flags, loc):
        return ins.Cmd(cmd=tuple(node.args), shell_form=not node.json, **loc)

    def _entrypoint(self, node, flags, loc):
        return ins.Entrypoint(cmd=tuple(node.args), shell_form=not node.json, **loc)

    def _shell(self, node, flags, loc):
        _at_least_one(node)
        if not node.json:
            raise DockerfileError("SHELL requires the arguments to be in JSON form")
        return ins.Shell(shell=tuple(node.args), **loc)

    def _pairs(self, node) -> tuple[tuple[str, str], ...]:
        _at_least_one(node)
        pairs = tuple(zip(node.args[::2], node.args[1::2]))
        if any(not key for key, _ in pairs):
            raise DockerfileError(f"{node.keyword.upper()} names can not be blank")
        return pairs

    def _env(self, node, flags, loc):
        return ins.Env(pairs=self._pairs(node), **loc)

    def _label(self, node, flags, loc):
        return ins.Label(pairs=self._pairs(node), **loc)

    def _arg(self, node, flags, loc):
        _at_least_one(node)
        defs = []
        for word in node.args:
            name, eq, default = word.partition("=")
            if not name:
                raise DockerfileError("ARG names can not be blank")
            defs.append(ins.ArgDef(name, default if eq else None))
        return ins.Arg(args=tuple(defs), **loc)

    def _expose(self, node, flags, loc):
        _at_least_one(node)
        return ins.Expose(ports=tuple(node.args), **loc)

    def _volume(self, node, flags, loc):
        _at_least_one(node)
        if any(not path.strip() for path in node.args):
            raise DockerfileError("VOLUME specified can not be an empty string")
        return ins.Volume(paths=tuple(node.args), **loc)

    def _user(self, node, flags, loc):
        _exactly_one(node)
        return ins.User(user=node.args[0], **loc)

    def _workdir(self, node, flags, loc):
        _exactly_one(node)
        return ins.Workdir(path=node.args[0], **loc)

    def _stopsignal(self, node, flags, loc):
        _exactly_one(node)
        if "$" not in node.args[0]:
            ins.check_signal(node.args[0])
        return ins.StopSignal(signal=node.args[0], **loc)

    def _maintainer(self, node, flags, loc):
        _exactly_one(node)
        return ins.Maintainer(name=node.args[0], **loc)

    def _transfer(self, node, flags) -> dict:
        what = node.keyword.upper()
        if len(node.args) < 2:
            raise DockerfileError(f"{what} requires at least two arguments, but only one was "
                                  "provided. Destination could not be determined.")
        heredocs = [_chomped(h) for h in node.heredocs]
        *sources, dest = _join_heredoc_operators(node.args) if heredocs else node.args
        if heredocs and parse_heredoc_word(dest, self.escape):
            raise DockerfileError(f"{what} cannot accept a heredoc as a destination")
        paths: list[str] = []
        used: list[ins.Heredoc] = []
        for src in sources:
            if heredocs and parse_heredoc_word(src, self.escape):
                used.append(heredocs.pop(0))
            else:
                paths.append(src)
        chmod = flags.get("chmod")
        if chmod is not None and "$" not in chmod:
            ins.parse_chmod(chmod)
        source_from = flags.get("from")
        if source_from is not None and "$" in source_from:
            raise DockerfileError(
                "variable expansion is not supported for --from, define a new stage with FROM "
                "using ARG from global scope as a workaround")
        return dict(sources=tuple(paths), dest=dest, heredocs=tuple(used), chown=flags.get("chown"),
                    chmod=chmod, link=flags.get("link", False), exclude=tuple(flags.get("exclude", [])))

    def _copy(self, node, flags, loc):
        fields = self._transfer(node, flags)
        for src in fields["sources"]:
            if _is_remote(src):
                raise DockerfileError(f"source can't be a URL or Git repository for COPY: {src} (use ADD)")
        return ins.Copy(from_=flags.get("from"), parents=flags.get("parents", False), **fields, **loc)

    def _add(self, node, flags, loc):
        fields = self._transfer(node, flags)
        checksum = flags.get("checksum")
        if checksum is not None:
            sources = fields["sources"] + tuple(h.name for h in fields["heredocs"])
            if len(sources) != 1:
                raise DockerfileError("checksum can't be specified for multiple sources")
            if "$" not in sources[0] and not _is_remote(sources[0]):
                raise DockerfileError("checksum can't be specified for non-HTTP(S) or Git sources")
        return ins.Add(checksum=checksum, keep_git_dir=flags.get("keep-git-dir", False),
                       unpack=flags.get("unpack"), **fields, **loc)

    def _healthcheck(self, node, flags, loc):
        _at_least_one(node)
        kind = node.args[0].upper()
        args = node.args[1:]
        if kind == "NONE":
            if args:
                raise DockerfileError("HEALTHCHECK NONE takes no arguments")
            return ins.Healthcheck(test=("NONE",), **loc)
        if kind != "CMD":
            raise DockerfileError(f"Unknown type {kind!r} in HEALTHCHECK (try CMD)")
        if not args:
            raise DockerfileError("Missing command after HEALTHCHECK CMD")
        test = ("CMD", *args) if node.json else ("CMD-SHELL", " ".join(args))
        durations = {}
        for name in ("interval", "timeout", "start-period", "start-interval"):
            text = flags.get(name, "")
            value = ins.parse_duration(text) if text else 0
            if value < 0:
                raise DockerfileError(f"--{name} cannot be negative ({text})")
            if 0 < value < 1_000_000:
                raise DockerfileError(f"--{name} cannot be less than 1ms ({text})")
            durations[name.replace("-", "_")] = value
        retries = flags.get("retries", "")
        if retries:
            if not re.fullmatch(r"[+-]?\d+", retries):
                raise DockerfileError(f"invalid --retries value {retries!r}: expected an integer")
            if int(retries) < 0:
                raise DockerfileError(f"--retries cannot be negative ({retries})")
        return ins.Healthcheck(test=test, retries=int(retries or 0), **durations, **loc)

    def _onbuild(self, node, flags, loc):
        _at_least_one(node)
        trigger = node.sub.keyword.upper()
        if trigger == "ONBUILD":
            raise DockerfileError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trigger in ("MAINTAINER", "FROM"):
            raise DockerfileError(f"{trigger} isn't allowed as an ONBUILD trigger")
        sub = replace(node.sub, heredocs=node.heredocs, line=node.line, end_line=node.end_line)
        expression = _ONBUILD_PREFIX.sub("", node.original, count=1)
        expression += "".join("\n" + h.content + h.name for h in node.heredocs)
        return ins.OnBuild(expression=expression, trigger=self.build(sub), **loc)


def _chomped(heredoc: ins.Heredoc) -> ins.Heredoc:
    if not heredoc.chomp:
        return heredoc
    return replace(heredoc, content=re.sub(r"(?m)^\t+", "", heredoc.content))


def _is_remote(src: str) -> bool:
    return src.startswith(("http://", "https://", "git://", "git@", "ssh://"))
