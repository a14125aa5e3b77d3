""".dockerignore reading and matching (notes §1.13: ignorefile.ReadAll + moby/patternmatcher).

Paths are context-relative, ``/``-separated, without a leading ``./``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from orca.errors import IgnoreFileError

DEFAULT_NAME = ".dockerignore"
_REGEX_SPECIALS = set(".+()|{}$^")  # literal in a pattern; ^ negates only inside [...]


def choose_ignore_file(dockerfile: str, names: Collection[str]) -> str | None:
    """``<dockerfile>.dockerignore`` wins over ``.dockerignore``; None if neither is in ``names``."""
    for candidate in (dockerfile + DEFAULT_NAME, DEFAULT_NAME):
        if candidate in names:
            return candidate
    return None


def never(_rel: str) -> bool:
    """The predicate of no .dockerignore: nothing excluded."""
    return False


def context_filter(context: Path, dockerfile: Path) -> Callable[[str], bool]:
    """The .dockerignore of the build (<Dockerfile>.dockerignore first) as a
    predicate on context-relative paths."""
    for candidate in (Path(str(dockerfile) + DEFAULT_NAME), Path(context) / DEFAULT_NAME):
        if candidate.is_file():
            source = str(candidate)
            return Matcher(read(candidate.read_text(encoding="utf-8", errors="replace"), source)).matches
    return never


def read(text: str, source: str = DEFAULT_NAME) -> list[str]:
    """The patterns of a .dockerignore, cleaned and checked; exceptions keep their ``!``.

    Errors name ``source`` and the line."""
    patterns = []
    for number, line in enumerate(text.split("\n")):
        if number == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):  # only a first-column # is a comment
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        pattern = "!" + pattern if invert else pattern
        try:
            Matcher([pattern], source)
        except IgnoreFileError as err:
            message = str(err).removeprefix(source + ": ")
            raise IgnoreFileError(f"{source}:{number + 1}: {message}") from None
        patterns.append(pattern)
    return patterns


def parse(text: str, source: str = DEFAULT_NAME) -> "Matcher":
    return Matcher(read(text, source), source)


def clean(path: str) -> str:
    """Go's path.Clean: lexical, ``//a`` -> ``/a``, ``""`` -> ``.``."""
    rooted = path.startswith("/")
    parts: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(segment)
    joined = "/".join(parts)
    return "/" + joined if rooted else joined or "."


@dataclass(frozen=True)
class _Pattern:
    """One .dockerignore pattern, compiled to the cheapest matcher that fits it."""
    text: str
    exclusion: bool
    kind: str  # "exact", "prefix", "suffix" or "regex"
    regex: re.Pattern | None

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":  # "dir/**"
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":  # "**/name"
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        return self.regex.match(path) is not None


class Matcher:
    """Decides whether a context path is excluded; the last matching pattern wins."""

    def __init__(self, patterns: list[str], source: str = DEFAULT_NAME):
        self.source = source
        self.patterns: list[_Pattern] = []
        for text in patterns:
            text = text.strip()
            if not text:
                continue
            text = clean(text)
            exclusion = text.startswith("!")
            if exclusion:
                if len(text) == 1:
                    raise IgnoreFileError(f'{source}: illegal exclusion pattern: "!"')
                text = text[1:]
            _check_syntax(text, source)
            self.patterns.append(_compile(text, exclusion))

    @property
    def has_exclusions(self) -> bool:
        """True when some ``!pattern`` may re-include a path below an excluded directory."""
        return any(p.exclusion for p in self.patterns)

    def matches(self, path: str) -> bool:
        """True if ``path`` or one of its parent directories is excluded."""
        path = clean(path)
        parent_dirs = path.split("/")[:-1]
        matched = False
        for pattern in self.patterns:
            # An inclusion cannot change an excluded path and vice versa.
            if pattern.exclusion != matched:
                continue
            hit = pattern.match(path)
            if not hit:
                hit = any(pattern.match("/".join(parent_dirs[:i + 1]))
                          for i in range(len(parent_dirs)))
            if hit:
                matched = not pattern.exclusion
        return matched


def _compile(text: str, exclusion: bool) -> _Pattern:
    out = ["^"]
    kind = "exact"
    i = 0
    first = True
    in_class = False
    while i < len(text):
        ch = text[i]
        i += 1
        if ch == "*" and text[i:i + 1] == "*":
            i += 1
            if text[i:i + 1] == "/":
                i += 1
            if i == len(text):  # trailing "**" takes everything below
                if kind == "exact":
                    kind = "prefix"
                else:
                    out.append(".*")
                    kind = "regex"
            else:
                out.append("(.*/)?")  # any number of segments, even none
                kind = "regex"
            if first:
                kind = "suffix"
        elif ch == "*":
            out.append("[^/]*")
            kind = "regex"
        elif ch == "?":
            out.append("[^/]")
            kind = "regex"
        elif ch == "^" and in_class and out[-1] == "[":
            out.append(ch)
        elif ch in _REGEX_SPECIALS:
            out.append("\\" + ch)
        elif ch == "\\":
            if i < len(text):
                out.append(re.escape(text[i]))
                i += 1
                kind = "regex"
            else:
                out.append("\\\\")
        elif ch in "[]":
            in_class = ch == "["
            out.append(ch)
            kind = "regex"
        else:
            out.append(ch)
        first = False
    if kind != "regex":
        return _Pattern(text, exclusion, kind, None)
    try:
        return _Pattern(text, exclusion, kind, re.compile("".join(out) + "$"))
    except re.error as err:
        raise IgnoreFileError(f"invalid pattern {text!r}: {err}") from None


def _check_syntax(text: str, source: str) -> None:
    """filepath.Match's syntax check: escapes complete, brackets closed and non-empty."""
    i = 0
    while i < len(text):
        ch = text[i]
        i += 1
        if ch == "\\":
            if i == len(text):
                raise IgnoreFileError(f"{source}: syntax error in pattern {text!r}: trailing \\")
            i += 1
        elif ch == "[":
            if text[i:i + 1] == "^":
                i += 1
            start = i
            while i < len(text) and (text[i] != "]" or i == start):
                i += 2 if text[i] == "\\" else 1
            if i >= len(text):
                raise IgnoreFileError(f"{source}: syntax error in pattern {text!r}: unclosed [")
            i += 1
