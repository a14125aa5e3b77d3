"""Dockerfile parsing as BuildKit's frontend does it (notes §1.1-1.5, 1.10, 1.11)."""

import dataclasses
import subprocess
import sys

import pytest

from orca.dockerfile import instructions as ins
from orca.dockerfile.parser import parse_dockerfile, parse_heredoc_word, parse_trigger
from orca.errors import DockerfileError


def parse(text, file="Dockerfile"):
    return parse_dockerfile(text, file)


def one(line, prefix="FROM scratch\n"):
    """The single instruction after FROM in ``prefix + line``."""
    (instruction,) = parse(prefix + line).stages[0].instructions
    return instruction


def error(text, file="Dockerfile"):
    with pytest.raises(DockerfileError) as info:
        parse(text, file)
    return str(info.value)


# --- physical lines -----------------------------------------------------------

def test_bom_crlf_and_comments():
    df = parse("\ufeffFROM a\r\n# a comment\r\n  RUN echo # not a comment\r\n")
    (run,) = df.stages[0].instructions
    assert run.cmd == ("echo # not a comment",)
    assert run.line == 3


def test_continuation_keeps_indentation_and_skips_comments():
    text = ("FROM a\n"
            "RUN echo hello \\\n"
            "  world \\\n"
            "# dropped comment\n"
            "    # indented comment also dropped\n"
            "  goodnight\n")
    run = parse(text).stages[0].instructions[0]
    assert run.cmd == ("echo hello   world   goodnight",)
    assert (run.line, run.end_line) == (2, 6)
    assert parse(text).warnings == ()


def test_first_line_leading_whitespace_stripped():
    assert one("   \t RUN   x  ").cmd == ("x",)


@pytest.mark.parametrize("line, expected", [
    ("RUN a \\  \t\nb", "a b"),            # spaces after the escape still continue
    ("RUN a\\\\\nRUN b", "a\\\\"),        # escaped escape does not continue
    ("RUN something \\", "something"),     # continuation at EOF just ends
    ("RUN \\\n\\\nx", "x"),
])
def test_line_continuation(line, expected):
    assert parse("FROM a\n" + line).stages[0].instructions[0].cmd == (expected,)


def test_empty_continuation_line_warns():
    df = parse("FROM a\nRUN a \\\n\n   \nb\n")
    assert df.stages[0].instructions[0].cmd == ("a b",)
    (warning,) = df.warnings
    assert warning.rule == "NoEmptyContinuation"
    assert "Empty continuation line" in warning.message and warning.line == 5


def test_keyword_case_insensitive():
    df = parse("from a AS B\nrun x\nCoPy a b\n")
    assert df.stages[0].name == "b"
    assert [type(i) for i in df.stages[0].instructions] == [ins.Run, ins.Copy]


_FIELD_NAMES = """
import dataclasses
from orca.dockerfile import instructions as ins
classes = [c for c in vars(ins).values() if isinstance(c, type) and issubclass(c, ins.Instruction)]
print(" ".join(sorted({f.name for c in classes for f in dataclasses.fields(c)})))
"""


def test_keyword_is_a_class_attribute_not_a_field():
    """Not an __init__ argument, nor part of equality and repr; also where
    typing is not imported (orca-build's start), without which dataclass()
    would take a ClassVar annotation for a field."""
    run = one("RUN x")
    assert run.keyword == "RUN" and "keyword" not in repr(run)
    assert run == ins.Run(**{f.name: getattr(run, f.name) for f in dataclasses.fields(run)})
    without_typing, with_typing = (
        subprocess.run([sys.executable, "-c", first + _FIELD_NAMES], capture_output=True, text=True,
                       check=True).stdout.split() for first in ("", "import typing\n"))
    assert without_typing == with_typing
    assert "keyword" not in without_typing and {"line", "cmd", "image", "sources"} <= set(without_typing)


@pytest.mark.parametrize("text, message", [
    ("", "Dockerfile:1: file with no instructions"),
    ("# only\n\n# comments\n", "Dockerfile:3: file with no instructions"),
    ("FROM a\nRUNN x\n", "Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)"),
    ("FROM a\nfrobnicate\n", "Dockerfile:2: unknown instruction: FROBNICATE"),
    ("RUN x\n", "Dockerfile:1: no build stage in current context: RUN must come after FROM"),
    ("FROM a\n" + "RUN " + "x" * 70000 + "\n",
     "Dockerfile:2: dockerfile line greater than max allowed size of 65535"),
])
def test_file_errors(text, message):
    assert error(text) == message


def test_error_names_file():
    assert error("FROM a\nRUNN x\n", "app/Build.dockerfile").startswith("app/Build.dockerfile:2: ")


# --- directives ------------------------------------------------------------------

def test_directives_recorded():
    df = parse("# syntax=docker/dockerfile:1.7\n#ESCAPE = `\n# check=skip=A, B;error=true\nFROM a\n")
    assert df.directives.syntax == "docker/dockerfile:1.7"
    assert df.directives.escape == "`"
    assert df.directives.check == ins.CheckOptions(skip=("A", "B"), error=True)


def test_check_all():
    df = parse("# check=skip=all;experimental=all\nFROM a\n")
    assert df.directives.check.skip_all and df.directives.check.experimental_all


def test_backtick_escape_changes_continuation_and_words():
    df = parse("# escape=`\nFROM a\nRUN dir c:\\ `\n  /w\nCOPY c:\\a\\ `\n  d:\\\n")
    run, copy = df.stages[0].instructions
    assert run.cmd == ("dir c:\\   /w",)
    assert copy.sources == ("c:\\a\\",) and copy.dest == "d:\\"


@pytest.mark.parametrize("text, escape", [
    ("# unknown=x\n# escape=`\nFROM a\n", "\\"),   # unknown key ends directives
    ("\n# escape=`\nFROM a\n", "\\"),              # a blank line ends them
    ("# hello\n# escape=`\nFROM a\n", "\\"),       # a plain comment ends them
    ("FROM a\n# escape=`\n", "\\"),
    ("  # escape=`\nFROM a\n", "`"),               # leading whitespace is fine
])
def test_when_directives_stop(text, escape):
    assert parse(text).directives.escape == escape


@pytest.mark.parametrize("text, message", [
    ("# escape=`\n# escape=\\\nFROM a\n", "Dockerfile:2: only one escape parser directive can be used"),
    ("# syntax=a\n# SYNTAX=b\nFROM a\n", "Dockerfile:2: only one syntax parser directive can be used"),
    ("# escape=x\nFROM a\n", "Dockerfile:1: invalid escape token 'x' does not match ` or \\"),
    ("# check=bogus=1\nFROM a\n", "Dockerfile:1: invalid check option 'bogus'"),
    ("# check=skip\nFROM a\n", "Dockerfile:1: invalid check option 'skip'"),
    ("# check=error=maybe\nFROM a\n",
     "Dockerfile:1: failed to parse check option 'error=maybe': 'maybe' is not a boolean"),
])
def test_directive_errors(text, message):
    assert error(text) == message


# --- FROM ------------------------------------------------------------------------

@pytest.mark.parametrize("line, image, platform, name", [
    ("FROM debian:bookworm", "debian:bookworm", None, None),
    ("FROM --platform=$BUILDPLATFORM ${BASE} as Builder", "${BASE}", "$BUILDPLATFORM", "builder"),
    ("FROM scratch AS a-b_c.d", "scratch", None, "a-b_c.d"),
])
def test_from(line, image, platform, name):
    base = parse(line).stages[0].base
    assert (base.image, base.platform, base.name) == (image, platform, name)


@pytest.mark.parametrize("line, message", [
    ("FROM", "FROM requires either one or three arguments"),
    ("FROM a b", "FROM requires either one or three arguments"),
    ("FROM a AS", "FROM requires either one or three arguments"),
    ("FROM a IS b", "FROM requires either one or three arguments"),
    ("FROM a AS 1st", "invalid name for build stage: '1st', name can't start with a number or contain symbols"),
    ("FROM a AS x$y", "invalid name for build stage: 'x$y', name can't start with a number or contain symbols"),
    ("FROM --platform a", "missing a value on flag: --platform"),
    ("FROM --plat=x a", "unknown flag: --plat (did you mean --platform?)"),
    ("FROM --platform=a --platform=b a", "duplicate flag specified: --platform"),
])
def test_from_errors(line, message):
    assert error(line) == "Dockerfile:1: " + message


def test_stages_and_meta_args():
    df = parse("ARG A=1 B\nARG C\nFROM a AS one\nRUN x\nFROM one\nRUN y\n")
    assert [a.args for a in df.meta_args] == [
        (ins.ArgDef("A", "1"), ins.ArgDef("B")), (ins.ArgDef("C"),)]
    assert [s.name for s in df.stages] == ["one", "stage-1"]
    assert df.stage("ONE") is df.stages[0] and df.stage("1") is df.stages[1]
    assert df.stage("nope") is None


# --- RUN, CMD, ENTRYPOINT, SHELL -----------------------------------------------

@pytest.mark.parametrize("line, cmd, shell_form", [
    ('RUN ["echo", "a b"]', ("echo", "a b"), False),
    ("RUN   echo $HOME  ", ("echo $HOME",), True),
    ("RUN ['a','b']", ("['a','b']",), True),            # bad JSON falls back to shell form
    ('RUN ["a" "b"]', ('["a" "b"]',), True),
    ('RUN ["a"] extra', ('["a"] extra',), True),
    ("RUN [NaN]", ("[NaN]",), True),
    ('CMD ["a"]', ("a",), False),
    ("CMD echo hi", ("echo hi",), True),
    ("CMD []", (), False),
    ('ENTRYPOINT ["/bin/app", "--flag"]', ("/bin/app", "--flag"), False),
    ("ENTRYPOINT exec app", ("exec app",), True),
])
def test_exec_and_shell_form(line, cmd, shell_form):
    instruction = one(line)
    assert (instruction.cmd, instruction.shell_form) == (cmd, shell_form)


def test_shell():
    assert one('SHELL ["/bin/bash", "-o", "pipefail", "-c"]').shell == ("/bin/bash", "-o", "pipefail", "-c")


@pytest.mark.parametrize("line, message", [
    ('RUN ["a", 1]', "when using JSON array syntax, arrays must be comprised of strings only"),
    ('CMD ["a", null]', "when using JSON array syntax, arrays must be comprised of strings only"),
    ("RUN", "RUN requires at least one argument"),
    ("SHELL powershell -command", "SHELL requires the arguments to be in JSON form"),
    ("SHELL", "SHELL requires at least one argument"),
    ("CMD --x=1 a", "unknown flag: --x"),
])
def test_command_errors(line, message):
    assert error("FROM a\n" + line) == "Dockerfile:2: " + message


# --- RUN flags -------------------------------------------------------------------

def test_run_flags():
    run = one("RUN --network=none --security=insecure --mount=type=tmpfs,target=/t,size=64m "
              '--mount="type=cache,target=/a b,id=x" -- --notaflag')
    assert run.network == "none" and run.security == "insecure"
    assert run.cmd == ("--notaflag",)
    tmpfs, cache = run.mounts
    assert (tmpfs.type, tmpfs.target, tmpfs.size, tmpfs.readonly) == ("tmpfs", "/t", 64 << 20, False)
    assert (cache.type, cache.target, cache.id) == ("cache", "/a b", "x")


@pytest.mark.parametrize("spec, fields", [
    ("target=/src", dict(type="bind", target="/src", readonly=True)),
    ("type=bind,src=ctx,dst=/d,rw", dict(source="ctx", target="/d", readonly=False)),
    ("type=bind,source=s,destination=/d,readwrite=true", dict(source="s", target="/d", readonly=False)),
    ("type=bind,from=builder,target=/d,ro=false", dict(from_="builder", readonly=False)),
    ("type=bind,target=/d,readonly", dict(readonly=True)),
    ("type=cache,target=/root/.cache/", dict(readonly=False, sharing="shared", effective_id="/root/.cache",
                                             effective_mode=0o755)),
    ("type=cache,target=/c,id=pip,sharing=locked,mode=0700,uid=1000,gid=1000",
     dict(effective_id="pip", sharing="locked", mode=0o700, uid=1000, gid=1000)),
    ("type=CACHE,target=/c,sharing=PRIVATE", dict(type="cache", sharing="private")),
    ("type=tmpfs,target=/t", dict(readonly=False, size=None)),
    ("type=tmpfs,target=/t,size=1.5GiB", dict(size=int(1.5 * 1024 ** 3))),
    ("type=secret,id=tok", dict(readonly=True, effective_id="tok", effective_target="/run/secrets/tok",
                                effective_mode=0o400, required=False)),
    ("type=secret,target=/etc/key.pem,required", dict(effective_id="key.pem", required=True)),
    ("type=secret,source=npmrc,target=/root/.npmrc,mode=0440", dict(effective_id="npmrc", mode=0o440)),
    ("type=secret,id=tok,env=TOKEN,required=true", dict(env="TOKEN", required=True)),
    ("type=ssh", dict(effective_id="default", effective_mode=0o600, readonly=True)),
    ("type=ssh,id=gh,target=/s,required=false", dict(effective_id="gh", target="/s")),
    ("type=cache,target=$DIR", dict(target="$DIR")),
    ("type=cache,target=/c,uid=$UID", dict(uid=None)),
])
def test_mount(spec, fields):
    mount = one(f"RUN --mount={spec} true").mounts[0]
    for key, value in fields.items():
        assert getattr(mount, key) == value, key
    assert mount.spec == spec


def test_mount_expanded_later():
    mount = one("RUN --mount=type=cache,target=$DIR,uid=$UID true").mounts[0]
    env = {"DIR": "/cache", "UID": "42"}
    from orca.dockerfile.lexer import process_word
    done = mount.expanded(lambda v: process_word(v, env))
    assert (done.target, done.uid) == ("/cache", 42)


@pytest.mark.parametrize("flag, message", [
    ("--mount=type=nfs,target=/x", "unsupported mount type 'nfs'"),
    ("--mount=type=cahce,target=/x", "unsupported mount type 'cahce' (did you mean cache?)"),
    ("--mount=type=cache,target=/x,bogus=1", "unexpected key 'bogus' in 'bogus=1'"),
    ("--mount=type=cache,target=/x,targte=/y", "unexpected key 'targte' in 'targte=/y' (did you mean target?)"),
    ("--mount=type=cache,target=/x,noval", "invalid field 'noval' must be a key=value pair"),
    ("--mount=type=bind,target=/x,required", "unexpected key 'required' for mount type 'bind'"),
    ("--mount=type=cache,target=/x,required=true", "unexpected key 'required' for mount type 'cache'"),
    ("--mount=type=bind,target=/x,sharing=locked", "invalid cache sharing set for bind mount"),
    ("--mount=type=cache,target=/x,sharing=everyone", "unsupported sharing value 'everyone'"),
    ("--mount=type=bind,target=/x,size=1m", "unexpected key 'size' for mount type 'bind'"),
    ("--mount=type=tmpfs,target=/x,size=lots", "invalid value for size: lots"),
    ("--mount=type=cache,target=/x,mode=999", "invalid value 999 for mode"),
    ("--mount=type=cache,target=/x,uid=-1", "invalid value -1 for uid"),
    ("--mount=type=bind,target=/x,mode=0755", "mode not allowed for 'bind' type mounts"),
    ("--mount=type=tmpfs,target=/x,uid=0", "uid not allowed for 'tmpfs' type mounts"),
    ("--mount=type=bind,target=/x,ro=maybe", "invalid value for ro: maybe"),
    ("--mount=type=bind,from=$STAGE,target=/x",
     "'from' doesn't support variable expansion, define alias stage instead"),
    ("--mount=type=secret,from=x,id=a", "secret mount should not have a from"),
    ("--mount=type=secret", "invalid secret mount. one of source, target required"),
    ("--mount=type=secret,source=a,id=b", "both source and id can't be set"),
    ("--mount=type=cache", "mount target is required for cache mounts: type=cache"),
    ("--mount=type=cache,target=/", "invalid mount target '/': cannot mount over /"),
    ("--mount=type=bind,target=/x,env=A", "unexpected key 'env' for mount type 'bind'"),
    ("--mount='type=bind,\"target=/x'", "failed to parse csv mounts: unexpected end of data"),
    ("--mount", "missing a value on flag: --mount"),
    ("--network=bridge", "unsupported network mode 'bridge': expected default, none or host"),
    ("--network", "missing a value on flag: --network"),
    ("--network=none --network=host", "duplicate flag specified: --network"),
    ("--security=privileged", "unsupported security mode 'privileged': expected sandbox or insecure"),
    ("--device=/dev/fuse", "unknown flag: --device"),
    ("--mounts=type=cache", "unknown flag: --mounts (did you mean --mount?)"),
])
def test_run_flag_errors(flag, message):
    assert error(f"FROM a\nRUN {flag} true") == "Dockerfile:2: " + message


@pytest.mark.parametrize("flags, rest", [
    ("--a=1 --b='x y' c", "c"),
    ("--a=\"q\\\"x\" c d", "c d"),
    ("-- --a", "--a"),
    ("--a=1", ""),
])
def test_flag_extraction(flags, rest):
    from orca.dockerfile.parser import _extract_flags
    assert _extract_flags(flags, "\\")[0].strip() == rest


def test_flag_quotes_removed():
    copy = one("COPY --chown=\"app user\":'grp' a b")
    assert copy.chown == "app user:grp"


# --- heredocs ---------------------------------------------------------------------

def test_run_single_heredoc_runs_body():
    run = one("RUN <<EOF\necho $HOME\n# kept\nEOF\n")
    assert run.cmd == ("echo $HOME\n# kept\n",) and run.shell_form
    assert run.heredocs[0].name == "EOF" and run.script_file is None
    assert (run.line, run.end_line) == (2, 5)


def test_run_shebang_heredoc_becomes_script_file():
    run = one("RUN <<script.py\n#!/usr/bin/env python3\nprint(1)\nscript.py\n")
    assert run.script_file.content == "#!/usr/bin/env python3\nprint(1)\n"
    assert run.cmd == ("/dev/pipes/script.py",) and not run.shell_form


def test_run_heredoc_with_command_is_rebuilt():
    run = one("RUN python3 <<EOF > /out\nprint(1)\nEOF\n")
    assert run.cmd == ("python3 <<EOF > /out\nprint(1)\nEOF",)


def test_run_two_heredocs_rebuilt_in_order():
    run = one("RUN <<A cat - /dev/fd/3 3<<B\na\nA\nb\nB\n")
    assert [(h.name, h.fd) for h in run.heredocs] == [("A", 0), ("B", 3)]
    assert run.cmd == ("<<A cat - /dev/fd/3 3<<B\na\nA\nb\nB",)


def test_heredoc_chomp_strips_tabs():
    run = one("RUN <<-EOF\n\techo a\n\t\techo b\n\tEOF\n")
    assert run.cmd == ("echo a\necho b\n",)
    assert run.heredocs[0].chomp


@pytest.mark.parametrize("delimiter, name, expand", [
    ("EOF", "EOF", True),
    ("'EOF'", "EOF", False),
    ('"EOF"', "EOF", False),
    ("eo'f'", "eof", False),
    # BuildKit compares quote counts before and after lexing: an escaped quote
    # or an escaped delimiter is no quoting, and the body expands.
    ("eo\\'f", "eo'f", True),
    ("\\EOF", "EOF", True),
])
def test_heredoc_quoting_controls_expansion(delimiter, name, expand):
    assert parse_heredoc_word("<<" + delimiter) == (name, expand, False, 0)


@pytest.mark.parametrize("text, cmd, names, expand", [
    # an escaped delimiter still expands (the body is shell text either way for RUN)
    ("RUN <<\\EOF\necho $HOME\nEOF\n", ("echo $HOME\n",), ["EOF"], [True]),
    # spaces after << : one heredoc word, its body is not read as instructions
    ("RUN <<  EOF\nFROM x\nRUN y\nEOF\n", ("FROM x\nRUN y\n",), ["EOF"], [True]),
    ("RUN << 'EOF'\necho $X\nEOF\n", ("echo $X\n",), ["EOF"], [False]),
    ("RUN <<-  EOF\n\techo a\n\tEOF\n", ("echo a\n",), ["EOF"], [True]),
    ("RUN cat << A 3<< B\na\nA\nb\nB\n", ("cat << A 3<< B\na\nA\nb\nB",), ["A", "B"], [True, True]),
])
def test_run_heredoc_delimiter_forms(text, cmd, names, expand):
    run = one(text)
    assert run.cmd == cmd
    assert [h.name for h in run.heredocs] == names and [h.expand for h in run.heredocs] == expand


def test_copy_heredoc_with_spaces_after_the_operator():
    copy = one("COPY <<  one.txt src << \"two.txt\" /dest/\n1\none.txt\n2\ntwo.txt\n")
    assert copy.sources == ("src",) and copy.dest == "/dest/"
    assert [(h.name, h.content, h.expand) for h in copy.heredocs] == [("one.txt", "1\n", True),
                                                                        ("two.txt", "2\n", False)]


def test_heredoc_word_chomp_and_fd():
    assert parse_heredoc_word("12<<-'X'") == ("X", False, True, 12)


@pytest.mark.parametrize("word", ["<<", "cat<<EOF", "<<<EOF", "<<EOF bash", "<<'a b'x c"])
def test_not_heredoc_words(word):
    assert parse_heredoc_word(word) is None


def test_copy_heredocs_and_paths():
    copy = one("COPY <<one.txt src <<'two.txt' /dest/\n1 $X\none.txt\n2 $X\ntwo.txt\n")
    assert copy.sources == ("src",) and copy.dest == "/dest/"
    assert [(h.name, h.content, h.expand) for h in copy.heredocs] == [
        ("one.txt", "1 $X\n", True), ("two.txt", "2 $X\n", False)]


def test_heredoc_body_without_final_newline():
    copy = one("COPY <<f /d\nlast\nf")
    assert copy.heredocs[0].content == "last\n"
    copy = one("COPY <<f /d\nbody\n\nf\n")
    assert copy.heredocs[0].content == "body\n\n"


def test_json_form_heredoc_line_is_not_read_as_body():
    df = parse('FROM a\nRUN ["cat", "<<EOF"]\nRUN x\n')
    exec_form, shell_form = df.stages[0].instructions
    assert exec_form.cmd == ("cat", "<<EOF") and exec_form.heredocs == ()
    assert shell_form.cmd == ("x",)


def test_heredoc_ignored_outside_run_copy_add():
    df = parse("FROM a\nLABEL x=<<EOF\nRUN y\n")
    label, run = df.stages[0].instructions
    assert label.pairs == (("x", "<<EOF"),) and run.cmd == ("y",)


@pytest.mark.parametrize("text, message", [
    ("FROM a\nRUN <<EOF\nnever ends\n", "Dockerfile:2: unterminated heredoc 'EOF'"),
    ("FROM a\nCOPY <<A <<B /d\na\nA\n", "Dockerfile:2: unterminated heredoc 'B'"),
    ("FROM a\nCOPY a <<EOF\nx\nEOF\n", "Dockerfile:2: COPY cannot accept a heredoc as a destination"),
    ("FROM a\nADD a <<EOF\nx\nEOF\n", "Dockerfile:2: ADD cannot accept a heredoc as a destination"),
])
def test_heredoc_errors(text, message):
    assert error(text) == message


# --- ENV, LABEL, ARG ---------------------------------------------------------------

@pytest.mark.parametrize("line, pairs", [
    ("ENV A=1", (("A", "1"),)),
    ('ENV A="a b" B=\'c\' C=d\\ e', (("A", '"a b"'), ("B", "'c'"), ("C", "d\\ e"))),
    ("ENV A b c  d", (("A", "b c  d"),)),           # legacy form: rest of the line
    ("ENV A=", (("A", ""),)),
    ("ENV A=x=y", (("A", "x=y"),)),
    ('LABEL "com.example.a"="1" b=2', (('"com.example.a"', '"1"'), ("b", "2"))),
    ("LABEL maintainer me@x", (("maintainer", "me@x"),)),
])
def test_name_val(line, pairs):
    assert one(line).pairs == pairs


@pytest.mark.parametrize("line, message", [
    ("ENV", "ENV requires at least one argument"),
    ("ENV PATH", "ENV must have two arguments"),
    ("ENV A=1 B", "Syntax error - can't find = in 'B'. Must be of the form: name=value"),
    ("ENV =x", "ENV names can not be blank"),
    ("LABEL", "LABEL requires at least one argument"),
    ("LABEL a=1 b", "Syntax error - can't find = in 'b'. Must be of the form: name=value"),
    ("ARG", "ARG requires at least one argument"),
    ("ARG =x", "ARG names can not be blank"),
    ("ENV --x a=1", "unknown flag: --x"),
])
def test_name_val_errors(line, message):
    assert error("FROM a\n" + line) == "Dockerfile:2: " + message


@pytest.mark.parametrize("line, args", [
    ("ARG A", (ins.ArgDef("A"),)),
    ("ARG A=", (ins.ArgDef("A", ""),)),
    ('ARG A="x y" B=${A}', (ins.ArgDef("A", '"x y"'), ins.ArgDef("B", "${A}"))),
])
def test_arg(line, args):
    assert one(line).args == args


# --- other instructions ---------------------------------------------------------------

@pytest.mark.parametrize("line, attr, value", [
    ("EXPOSE 80 443/tcp  $PORTS", "ports", ("80", "443/tcp", "$PORTS")),
    ('VOLUME ["/data", "/a b"]', "paths", ("/data", "/a b")),
    ("VOLUME /data   /logs", "paths", ("/data", "/logs")),
    ("USER app:app", "user", "app:app"),
    ("USER  a b ", "user", "a b"),
    ("WORKDIR /srv/my app", "path", "/srv/my app"),
    ("STOPSIGNAL SIGTERM", "signal", "SIGTERM"),
    ("STOPSIGNAL 9", "signal", "9"),
    ("STOPSIGNAL $SIG", "signal", "$SIG"),
    ("MAINTAINER Jane <j@x>", "name", "Jane <j@x>"),
])
def test_simple_instructions(line, attr, value):
    assert getattr(one(line), attr) == value


def test_maintainer_warns():
    df = parse("FROM a\nMAINTAINER me\n")
    assert [w.rule for w in df.warnings] == ["MaintainerDeprecated"]


@pytest.mark.parametrize("line, message", [
    ("EXPOSE", "EXPOSE requires at least one argument"),
    ("VOLUME", "VOLUME requires at least one argument"),
    ('VOLUME [""]', "VOLUME specified can not be an empty string"),
    ("USER", "USER requires exactly one argument"),
    ("WORKDIR", "WORKDIR requires exactly one argument"),
    ("STOPSIGNAL", "STOPSIGNAL requires exactly one argument"),
    ("STOPSIGNAL SIGNOPE", "invalid signal: SIGNOPE"),
    ("STOPSIGNAL 0", "invalid signal: 0"),
    ("MAINTAINER", "MAINTAINER requires exactly one argument"),
    ("USER --x=1 a", "unknown flag: --x"),
])
def test_simple_errors(line, message):
    assert error("FROM a\n" + line) == "Dockerfile:2: " + message


# --- COPY / ADD -------------------------------------------------------------------------

def test_copy_flags():
    copy = one("COPY --from=Build --chown=1000:$G --chmod=u+x,go-w --link --parents "
               "--exclude=*.md --exclude=tmp/** a/./b c /dst")
    assert copy.from_ == "Build" and copy.chown == "1000:$G" and copy.chmod == "u+x,go-w"
    assert copy.link and copy.parents and copy.exclude == ("*.md", "tmp/**")
    assert copy.sources == ("a/./b", "c") and copy.dest == "/dst"


def test_copy_json_form_and_bool_flags():
    copy = one('COPY --link=false ["a b", "/d e/"]')
    assert copy.sources == ("a b",) and copy.dest == "/d e/" and not copy.link
    assert one("COPY --link=TRUE a b").link


def test_add_flags():
    add = one("ADD --checksum=sha256:abc --keep-git-dir --unpack=false https://x/y.tar /d")
    assert (add.checksum, add.keep_git_dir, add.unpack) == ("sha256:abc", True, False)
    assert one("ADD a.tar /d").unpack is None
    assert isinstance(add, ins.Copy) and add.keyword == "ADD"


@pytest.mark.parametrize("line, message", [
    ("COPY a", "COPY requires at least two arguments, but only one was provided. Destination could not be determined."),
    ("ADD a", "ADD requires at least two arguments, but only one was provided. Destination could not be determined."),
    ("COPY --from=$STAGE a b", "variable expansion is not supported for --from, define a new stage with "
                               "FROM using ARG from global scope as a workaround"),
    ("COPY --chmod=8755 a b", "invalid chmod parameter '8755': expected an octal mode or a symbolic mode like u+x"),
    ("COPY --chmod=17777 a b", "invalid chmod parameter '17777': octal mode greater than 07777"),
    ("COPY --chmod=u+q a b", "invalid chmod parameter 'u+q': expected an octal mode or a symbolic mode like u+x"),
    ("COPY --chmod a b", "missing a value on flag: --chmod"),
    ("COPY --link= a b", "missing a value on flag: --link"),
    ("COPY --link=yes a b", "expecting boolean value for flag --link, not: yes"),
    ("COPY --from=a --from=b a b", "duplicate flag specified: --from"),
    ("COPY --checksum=x a b", "unknown flag: --checksum"),
    ("COPY --keep-git-dir a b", "unknown flag: --keep-git-dir"),
    ("ADD --from=x a b", "unknown flag: --from"),
    ("ADD --parents a b", "unknown flag: --parents"),
    ("COPY https://x/y /d", "source can't be a URL or Git repository for COPY: https://x/y (use ADD)"),
    ("COPY git@github.com:a/b.git /d", "source can't be a URL or Git repository for COPY: git@github.com:a/b.git (use ADD)"),
    ("ADD --checksum=sha256:a https://x/1 https://x/2 /d", "checksum can't be specified for multiple sources"),
    ("ADD --checksum=sha256:a local.tar /d", "checksum can't be specified for non-HTTP(S) or Git sources"),
])
def test_copy_add_errors(line, message):
    assert error("FROM a\n" + line) == "Dockerfile:2: " + message


@pytest.mark.parametrize("text, mode, is_dir, expected", [
    ("755", 0o644, False, 0o755),
    ("0644", 0o777, True, 0o644),
    ("4755", 0o644, False, 0o4755),
    ("u+x", 0o644, False, 0o744),
    ("+x", 0o644, False, 0o755),
    ("a+x", 0o644, False, 0o755),
    ("go-w", 0o666, False, 0o644),
    ("u=rw,g=r,o=", 0o777, False, 0o640),
    ("a+X", 0o644, False, 0o644),
    ("a+X", 0o644, True, 0o755),
    ("a+X", 0o744, False, 0o755),
    ("g=u", 0o750, False, 0o770),
    ("u+s", 0o755, False, 0o4755),
    ("g+s", 0o755, True, 0o2755),
    ("+t", 0o755, True, 0o1755),
    ("u-x+s", 0o755, False, 0o4655),
])
def test_chmod(text, mode, is_dir, expected):
    assert ins.parse_chmod(text).apply(mode, is_dir) == expected


# --- HEALTHCHECK ---------------------------------------------------------------------------

@pytest.mark.parametrize("line, fields", [
    ("HEALTHCHECK NONE", dict(test=("NONE",))),
    ("HEALTHCHECK none", dict(test=("NONE",))),
    ("HEALTHCHECK CMD curl -f http://localhost/ || exit 1",
     dict(test=("CMD-SHELL", "curl -f http://localhost/ || exit 1"), interval=0, retries=0)),
    ('HEALTHCHECK CMD ["/bin/check", "-q"]', dict(test=("CMD", "/bin/check", "-q"))),
    ("HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=1.5h --start-interval=2s "
     "--retries=3 CMD true",
     dict(interval=90 * 10**9, timeout=500 * 10**6, start_period=5400 * 10**9,
          start_interval=2 * 10**9, retries=3)),
    ("HEALTHCHECK --interval=0 --timeout=1ms CMD true", dict(interval=0, timeout=10**6)),
])
def test_healthcheck(line, fields):
    health = one(line)
    for key, value in fields.items():
        assert getattr(health, key) == value, key


@pytest.mark.parametrize("line, message", [
    ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
    ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
    ("HEALTHCHECK PING x", "Unknown type 'PING' in HEALTHCHECK (try CMD)"),
    ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
    ("HEALTHCHECK --interval=10 CMD true", "time: invalid duration '10'"),
    ("HEALTHCHECK --interval=5x CMD true", "time: invalid duration '5x'"),
    ("HEALTHCHECK --timeout=10us CMD true", "--timeout cannot be less than 1ms (10us)"),
    ("HEALTHCHECK --interval=-1s CMD true", "--interval cannot be negative (-1s)"),
    ("HEALTHCHECK --retries=-1 CMD true", "--retries cannot be negative (-1)"),
    ("HEALTHCHECK --retries=x CMD true", "invalid --retries value 'x': expected an integer"),
    ("HEALTHCHECK --interval=1s --interval=2s CMD true", "duplicate flag specified: --interval"),
    ("HEALTHCHECK --intervall=1s CMD true", "unknown flag: --intervall (did you mean --interval?)"),
])
def test_healthcheck_errors(line, message):
    assert error("FROM a\n" + line) == "Dockerfile:2: " + message


# --- ONBUILD --------------------------------------------------------------------------------

def test_onbuild():
    onbuild = one("ONBUILD  run --mount=type=cache,target=/c make")
    assert onbuild.expression == "run --mount=type=cache,target=/c make"
    assert isinstance(onbuild.trigger, ins.Run)
    assert onbuild.trigger.cmd == ("make",) and onbuild.trigger.mounts[0].type == "cache"


def test_onbuild_heredoc_expression_and_reparse():
    onbuild = one("ONBUILD COPY <<f.txt /f\nhello\nf.txt\n")
    assert onbuild.expression == "COPY <<f.txt /f\nhello\nf.txt"
    assert onbuild.trigger.heredocs[0].content == "hello\n"
    trigger = parse_trigger(onbuild.expression, "base-image", 3)
    assert trigger == ins.Copy(line=3, end_line=3, original="COPY <<f.txt /f", sources=(),
                               dest="/f", heredocs=(ins.Heredoc("f.txt", "hello\n"),))


@pytest.mark.parametrize("line, message", [
    ("ONBUILD", "ONBUILD requires at least one argument"),
    ("ONBUILD ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    ("ONBUILD FROM a", "FROM isn't allowed as an ONBUILD trigger"),
    ("ONBUILD maintainer me", "MAINTAINER isn't allowed as an ONBUILD trigger"),
    ("ONBUILD RUNN x", "unknown instruction: RUNN (did you mean RUN?)"),
    ("ONBUILD COPY a", "COPY requires at least two arguments, but only one was provided. "
                       "Destination could not be determined."),
])
def test_onbuild_errors(line, message):
    assert error("FROM a\n" + line) == "Dockerfile:2: " + message


@pytest.mark.parametrize("expression, message", [
    ("FROM a", "base:7: FROM isn't allowed as an ONBUILD trigger"),
    ("RUN a\nRUN b", "base:7: ONBUILD trigger must be one instruction: 'RUN a\\nRUN b'"),
    ("COPY a", "base:7: COPY requires at least two arguments, but only one was provided. "
               "Destination could not be determined."),
])
def test_parse_trigger_errors(expression, message):
    with pytest.raises(DockerfileError) as info:
        parse_trigger(expression, "base", 7)
    assert str(info.value) == message


# --- value grammars used after expansion ------------------------------------------------------

@pytest.mark.parametrize("words, ports", [
    (["80"], ["80/tcp"]),
    (["53/UDP", "8000-8002/tcp"], ["53/udp", "8000/tcp", "8001/tcp", "8002/tcp"]),
    (["9/sctp"], ["9/sctp"]),
])
def test_parse_ports(words, ports):
    assert ins.parse_ports(words) == ports


@pytest.mark.parametrize("word, message", [
    ("http", "invalid containerPort: http"),
    ("80/icmp", "invalid proto: icmp"),
    ("70000", "invalid containerPort: 70000"),
    ("90-80", "invalid range specified for container port: 90-80"),
])
def test_parse_ports_errors(word, message):
    with pytest.raises(DockerfileError) as info:
        ins.parse_ports([word])
    assert str(info.value) == message


@pytest.mark.parametrize("value", ["SIGKILL", "kill", "TERM", "15", "SIGRTMIN+3", "RTMAX-1", "SIGRTMIN"])
def test_check_signal(value):
    assert ins.check_signal(value) == value


@pytest.mark.parametrize("value", ["SIGFOO", "0", "RTMIN+99", "RTMIN-1", ""])
def test_check_signal_errors(value):
    with pytest.raises(DockerfileError):
        ins.check_signal(value)
