"""Variable substitution as BuildKit's shell lexer does it (notes §1.6)."""

import pytest

from orca.dockerfile.lexer import Lexer, process_word, process_words
from orca.errors import DockerfileError, SubstitutionError

ENV = {"A": "apple", "E": "", "P": "a/b/c.tar.gz", "S": "x y", "U": "héllo", "Q": "a*b"}


@pytest.mark.parametrize("word, expected", [
    ("plain", "plain"),
    ("$A", "apple"),
    ("${A}", "apple"),
    ("pre$A.post", "preapple.post"),
    ("${A}s", "apples"),
    ("$Asuffix", ""),            # the name runs on: unset
    ("$MISSING", ""),
    ("${MISSING}", ""),
    ("$1", ""),                  # positional parameters are always unset
    ("$999x", "x"),
    ("$@$*$#$?$-$$$!$0", ""),    # special parameters are unset
    ("$.", "$."),                # bare $ stays literal
    ("a$", "a$"),
    ("$ x", "$ x"),
    ("\\$A", "$A"),
    ("a\\ b", "a b"),
    ("a\\\\b", "a\\b"),
    ("trailing\\", "trailing"),
    ("'$A'", "$A"),
    ("'a\\b'", "a\\b"),
    ('"$A"', "apple"),
    ('"\\$A"', "$A"),
    ('"a\\"b"', 'a"b'),
    ('"a\\\\b"', "a\\b"),
    ('"a\\nb"', "a\\nb"),        # other escapes stay inside double quotes
    ('"it\'s"', "it's"),
    ("'say \"hi\"'", 'say "hi"'),
    ("$U", "héllo"),
    ("${A:-dflt}", "apple"),
    ("${E:-dflt}", "dflt"),
    ("${MISSING:-dflt}", "dflt"),
    ("${A-dflt}", "apple"),
    ("${E-dflt}", ""),
    ("${MISSING-dflt}", "dflt"),
    ("${A:+alt}", "alt"),
    ("${E:+alt}", ""),
    ("${MISSING:+alt}", ""),
    ("${A+alt}", "alt"),
    ("${E+alt}", "alt"),
    ("${MISSING+alt}", ""),
    ("${A:?}", "apple"),
    ("${E?}", ""),
    ("${MISSING:-${A:-z}}", "apple"),      # words are expanded recursively
    ("${MISSING:-${OTHER:-z}}", "z"),
    ("${MISSING:-'q $A'}", "q $A"),
    ("${MISSING:-a\\}b}", "a}b"),
    ("${P#*/}", "b/c.tar.gz"),
    ("${P##*/}", "c.tar.gz"),
    ("${P%.*}", "a/b/c.tar"),
    ("${P%%.*}", "a/b/c"),
    ("${P#a?b}", "/c.tar.gz"),
    ("${P#x}", "a/b/c.tar.gz"),
    ("${P%}", "a/b/c.tar.gz"),
    ("${Q#a\\*}", "b"),
    ("${Q%\\*b}", "a"),
    ("${MISSING#x}", ""),
    ("${P/b/X}", "a/X/c.tar.gz"),
    ("${P//a/X}", "X/b/c.tXr.gz"),
    ("${P/*./}", "gz"),                     # greedy and unanchored
    ("${P/\\//-}", "a-b/c.tar.gz"),
    ("${P/zz/X}", "a/b/c.tar.gz"),
    ("${MISSING/a/b}", ""),
])
def test_process_word(word, expected):
    assert process_word(word, ENV) == expected


@pytest.mark.parametrize("word, expected", [
    ("a b  c", ["a", "b", "c"]),
    ("$S", ["x", "y"]),                      # split after expansion
    ('"$S"', ["x y"]),
    ("'$S'", ["$S"]),
    ("a\\ b c", ["a b", "c"]),
    ('"" x', ["x"]),
    ("pre$S", ["prex", "y"]),
    ("${MISSING:-1 2}", ["1", "2"]),
    ("", []),
])
def test_process_words(word, expected):
    assert process_words(word, ENV) == expected


@pytest.mark.parametrize("word, message", [
    ("'abc", "unexpected end of statement while looking for matching single-quote"),
    ('"abc', "unexpected end of statement while looking for matching double-quote"),
    ('"abc\\', "unexpected end of statement while looking for matching double-quote"),
    ("${}", "syntax error: bad substitution"),
    ("${:x}", "syntax error: bad substitution"),
    ("${{x}", "syntax error: bad substitution"),
    ("${", "syntax error: missing '}'"),
    ("${A", "syntax error: missing '}'"),
    ("${A:-x", "syntax error: missing '}'"),
    ("${A/x", "syntax error: missing '/' in ${}"),
    ("${A/x/y", "syntax error: missing '}'"),
    ("${A:=x}", "unsupported modifier (:=) in substitution"),
    ("${A=x}", "unsupported modifier (=) in substitution"),
    ("${A:#x}", "unsupported modifier (:#) in substitution"),
    ("${A:%x}", "unsupported modifier (:%) in substitution"),
    ("${#A}", "unsupported modifier (A) in substitution"),
    ("${MISSING:?}", "MISSING: is not allowed to be unset"),
    ("${MISSING?}", "MISSING: is not allowed to be unset"),
    ("${E:?}", "E: is not allowed to be empty"),
    ("${E:?must be set}", "E: must be set"),
    ("${MISSING?gone}", "MISSING: gone"),
    ("${P#\\x}", "invalid pattern (\\x) in substitution: invalid escape '\\x'"),
])
def test_errors(word, message):
    with pytest.raises(SubstitutionError) as info:
        process_word(word, ENV)
    assert str(info.value) == message
    assert isinstance(info.value, DockerfileError)


def test_error_can_be_located():
    with pytest.raises(SubstitutionError) as info:
        process_word("${A:=x}", ENV)
    located = info.value.at("Dockerfile", 7)
    assert str(located) == "Dockerfile:7: unsupported modifier (:=) in substitution"
    assert isinstance(located, SubstitutionError)


@pytest.mark.parametrize("word, expected", [
    ("$MISSING", "$MISSING"),
    ("${MISSING}", "${MISSING}"),
    ("${MISSING:-x}", "${MISSING:-x}"),
    ("${MISSING/a/b}", "${MISSING/a/b}"),
    ("${MISSING//a/b}", "${MISSING//a/b}"),
    ("$A $MISSING", "apple $MISSING"),
])
def test_skip_unset_env(word, expected):
    assert Lexer(skip_unset_env=True).process_word(word, ENV) == expected


def test_backtick_escape():
    lexer = Lexer("`")
    assert lexer.process_word("a`$A", ENV) == "a$A"
    assert lexer.process_word('"x`"y"', ENV) == 'x"y'
    assert lexer.process_word("c:\\dir", ENV) == "c:\\dir"


@pytest.mark.parametrize("word, expected", [
    ("'$A'", "'$A'"),
    ('"$A"', '"apple"'),
    ("say 'a b' $A", "say 'a b' apple"),
])
def test_raw_quotes_keep_quotes(word, expected):
    assert Lexer(raw_quotes=True).process_word(word, ENV) == expected


def test_raw_quotes_still_group_words():
    assert Lexer(raw_quotes=True).process_words("'a b' c", ENV) == ["'a b'", "c"]


def test_raw_escapes_keep_escape():
    lexer = Lexer(raw_quotes=True, raw_escapes=True)
    assert lexer.process_word("a\\'b", ENV) == "a\\'b"
    assert lexer.process_word('"a\\"b"', ENV) == '"a\\"b"'


def test_heredoc_body_mode_expands_inside_quotes():
    # COPY <<EOF bodies: quotes are ordinary text, $ still expands inside them.
    lexer = Lexer(skip_process_quotes=True)
    assert lexer.process_word("echo '$A' \"$A\"\n", ENV) == "echo 'apple' \"apple\"\n"
    assert lexer.process_word("it's $A\n", ENV) == "it's apple\n"
