"""Fuzzing the Dockerfile parser, the word lexer and the ignore-file reader:
whatever the text, the result is a value or an OrcaError (a UmociError)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fuzz_settings import bounded
from orca.dockerfile import ignore
from orca.dockerfile.lexer import Lexer
from orca.dockerfile.parser import parse_dockerfile
from orca.errors import SubstitutionError
from umoci_py.errors import UmociError

KEYWORDS = ["FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "LABEL", "USER", "WORKDIR", "EXPOSE", "VOLUME",
            "CMD", "ENTRYPOINT", "SHELL", "HEALTHCHECK", "ONBUILD", "STOPSIGNAL", "MAINTAINER", "BOGUS"]
PIECES = ["${A:-" * 400, "}" * 400, "$A", "${A}", "${A:-x}", "${A:+y}", "${A#*/}", "${A%%.*}", "${", "}", "$", "\\", "`", "'", '"',
          "[", "]", '["a", "b"]', "[[[[", "<<EOF", "<<-'EOF'", "EOF", "--from=a", "--mount=type=secret,id=s",
          "--chown=1:2", "--chmod=755", "--platform=$BUILDPLATFORM", "AS", "a b", "=", "\n", " ", "\t",
          "#", "# syntax=docker/dockerfile:1", "# escape=`", "\\\n", "${A/x/y}", "${A?err}", "é", "\x00"]
WORD = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=6)), max_size=8).map("".join)
LINE = st.tuples(st.sampled_from(KEYWORDS + [k.lower() for k in KEYWORDS]), WORD).map(" ".join)
ENV = {"A": "a/b.c.d", "E": "", "S": "x y"}


def _tolerate(fn, *args):
    try:
        fn(*args)
    except UmociError:
        pass


@bounded(600)
@given(st.lists(st.one_of(LINE, WORD), max_size=12).map("\n".join))
def test_fuzz_parse_dockerfile(text):
    _tolerate(parse_dockerfile, text, "Dockerfile")


@bounded(300)
@given(st.text(max_size=300))
def test_fuzz_parse_dockerfile_any_text(text):
    _tolerate(parse_dockerfile, text, "Dockerfile")


@bounded(600)
@given(WORD, st.sampled_from(["\\", "`"]), st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_fuzz_lexer(word, escape, raw_quotes, raw_escapes, skip_unset, skip_quotes):
    lexer = Lexer(escape=escape, raw_quotes=raw_quotes, raw_escapes=raw_escapes,
                  skip_unset_env=skip_unset, skip_process_quotes=skip_quotes)
    _tolerate(lexer.process_word, word, ENV)
    _tolerate(lexer.process_words, word, ENV)


@bounded(300)
@given(st.lists(st.one_of(WORD, st.sampled_from(["!", "**", "**/", "[a-", "[!]", "\\", "../x", "/"])),
                max_size=8).map("\n".join), st.text(max_size=30))
def test_fuzz_ignore(text, path):
    try:
        ignore.Matcher(ignore.read(text, ".dockerignore"), ".dockerignore").matches(path)
    except UmociError:
        pass


def test_deeply_nested_substitution_is_a_substitution_error():
    """Found by test_fuzz_lexer's seeds: ${A:-${A:-...}} 3000 deep raised RecursionError."""
    word = "${A:-" * 3000 + "x" + "}" * 3000
    try:
        Lexer().process_word(word, {})
    except SubstitutionError as err:
        assert "nested too deeply" in str(err)
    else:
        raise AssertionError("no error")
