"""Variable substitution in Dockerfile words, following BuildKit's shell lexer.

A hand-written character scanner: quotes, the escape token, ``$name``,
``${name}`` and the ``${name<modifier>word}`` forms.  It is not a shell:
there is no command substitution, arithmetic or globbing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from orca.errors import SubstitutionError

_SPECIAL_PARAMS = frozenset("@*#?-$!0")


@dataclass(frozen=True)
class Lexer:
    """Expansion options.

    raw_quotes: keep quote characters in the output (quotes still group words).
    raw_escapes: keep the escape token in the output.
    skip_unset_env: leave references to unset variables as written.
    skip_process_quotes: quotes are ordinary characters (heredoc bodies).
    """

    escape: str = "\\"
    raw_quotes: bool = False
    raw_escapes: bool = False
    skip_unset_env: bool = False
    skip_process_quotes: bool = False

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """Expand ``word`` to one string."""
        result, _ = self._run(word, env)
        return result

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """Expand ``word`` and split it on unquoted whitespace (after expansion)."""
        _, words = self._run(word, env)
        return words

    def _run(self, word: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
        try:
            return _Scan(self, word, env).run()
        except RecursionError:
            # Nested ${a:-${b:-...}} recurse once per level.
            raise SubstitutionError("substitutions nested too deeply") from None


def process_word(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    return Lexer(escape).process_word(word, env)


def process_words(word: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    return Lexer(escape).process_words(word, env)


class _Words:
    """Accumulates words; whitespace added with ``add_char`` separates them."""

    def __init__(self):
        self.word = ""
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_string(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def add_raw(self, s: str) -> None:
        self.word += s
        self.in_word = True

    def result(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
        return self.words


class _Scan:
    def __init__(self, lexer: Lexer, text: str, env: Mapping[str, str]):
        self.lx = lexer
        self.text = text
        self.pos = 0
        self.env = env

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    def run(self) -> tuple[str, list[str]]:
        return self.until("", self.lx.raw_escapes)

    def until(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        """Scan to ``stop`` (consumed) or to the end when ``stop`` is empty."""
        out: list[str] = []
        words = _Words()
        esc = self.lx.escape
        while self.pos < len(self.text):
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return "".join(out), words.result()
            if ch == "$":
                value = self.dollar()
                out.append(value)
                words.add_string(value)
            elif ch in "'\"" and not self.lx.skip_process_quotes:
                value = self.single_quote() if ch == "'" else self.double_quote()
                out.append(value)
                words.add_raw(value)
            else:
                self.next()
                if ch == esc:
                    if raw_escapes:
                        out.append(ch)
                        words.add_raw(ch)
                    ch = self.next()
                    if not ch:
                        break
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                out.append(ch)
        if stop:
            raise SubstitutionError(
                f"unexpected end of statement while looking for matching {stop}")
        return "".join(out), words.result()

    def single_quote(self) -> str:
        # Everything up to the next ' is literal; a ' cannot be escaped inside.
        raw = self.lx.raw_quotes
        out = ["'"] if raw else []
        self.next()
        while True:
            ch = self.next()
            if not ch:
                raise SubstitutionError(
                    "unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if raw:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        raw = self.lx.raw_quotes
        esc = self.lx.escape
        out = ['"'] if raw else []
        self.next()
        while True:
            ch = self.peek()
            if not ch:
                raise SubstitutionError(
                    "unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if raw:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            self.next()
            if ch == esc:
                following = self.peek()
                if not following:
                    continue  # reported as unterminated on the next round
                # Only ", $ and the escape itself can be escaped; other escapes stay.
                if following in ('"', "$", esc):
                    if self.lx.raw_escapes:
                        out.append(ch)
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        first = self.peek()
        if first.isdecimal():  # positional parameter: the whole digit run
            start = self.pos
            while self.peek().isdecimal():
                self.pos += 1
            return self.text[start:self.pos]
        if first and first in _SPECIAL_PARAMS:
            return self.next()
        start = self.pos
        while True:
            ch = self.peek()
            if not ch or not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            self.pos += 1
        return self.text[start:self.pos]

    def lookup(self, name: str) -> str | None:
        return self.env.get(name)

    def dollar(self) -> str:
        self.next()  # the $
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value = self.lookup(name)
            if value is None:
                return "$" + name if self.lx.skip_unset_env else ""
            return value
        self.next()  # the {
        first = self.peek()
        if not first:
            raise SubstitutionError("syntax error: missing '}'")
        if first in "{}:":
            raise SubstitutionError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if not ch:
            raise SubstitutionError("syntax error: missing '}'")
        if ch == "}":
            value = self.lookup(name)
            if value is None:
                return "${" + name + "}" if self.lx.skip_unset_env else ""
            return value
        if ch == "/":
            return self.replace(name)
        modifier = ch
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            modifier += ch
        if ch not in "+-?#%" or not ch:
            raise SubstitutionError(f"unsupported modifier ({modifier}) in substitution")
        pattern_op = ch in "#%"
        if null_is_unset and pattern_op:
            raise SubstitutionError(f"unsupported modifier ({modifier}) in substitution")
        word = self.modifier_word("}", pattern_op)
        value = self.lookup(name)
        if value is None and self.lx.skip_unset_env:
            return "${" + name + modifier + word + "}"
        empty = value is None or (null_is_unset and value == "")
        if ch == "-":
            return word if empty else value
        if ch == "+":
            return "" if empty else word
        if ch == "?":
            if value is None:
                raise SubstitutionError(f"{name}: {word or 'is not allowed to be unset'}")
            if empty:
                raise SubstitutionError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        greedy = word.startswith(ch)
        if greedy:
            word = word[1:]
        if ch == "#":
            return _trim_prefix(word, value or "", greedy)
        return _trim_suffix(word, value or "", greedy)

    def modifier_word(self, stop: str, raw_escapes: bool) -> str:
        try:
            word, _ = self.until(stop, raw_escapes)
        except SubstitutionError:
            if self.pos >= len(self.text):
                raise SubstitutionError(f"syntax error: missing '{stop}'"
                                        + (" in ${}" if stop == "/" else "")) from None
            raise
        return word

    def replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        pattern = self.modifier_word("/", True)
        replacement = self.modifier_word("}", True)
        value = self.lookup(name)
        if value is None and self.lx.skip_unset_env:
            return "${" + name + ("//" if replace_all else "/") + pattern + "/" + replacement + "}"
        regex = _pattern_regex(pattern, greedy=True, anchored=False)
        return regex.sub(lambda _m: replacement, value or "", count=0 if replace_all else 1)


def _pattern_regex(pattern: str, greedy: bool, anchored: bool) -> re.Pattern:
    """Compile a shell pattern (only ``*``, ``?`` and ``\\`` escapes) to a regex."""
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(star)
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            following = pattern[i] if i < len(pattern) else ""
            if following in ("}", "/") and following:
                continue  # the escape only protected the ${} syntax
            if following not in ("*", "?", "\\") or not following:
                raise SubstitutionError(
                    f"invalid pattern ({pattern}) in substitution: invalid escape '\\{following}'")
            out.append(re.escape(following))
            i += 1
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out))


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    match = _pattern_regex(pattern, greedy, anchored=True).search(value)
    return value[match.end():] if match else value


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern keeping each ``\\x`` escape pair in order."""
    tokens = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            tokens.append(pattern[i:i + 2])
            i += 2
        else:
            tokens.append(pattern[i])
            i += 1
    return "".join(reversed(tokens))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # A regex finds leftmost matches only, so search the reversed string.
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]
