"""orca-build's command line itself: the default command, repeated flags,
--version and -h, and every bad command line as one line with exit status 2
(nothing on stdout, nothing written)."""

from __future__ import annotations

import re

import pytest

from orca_build_helpers import image, ok, run_cli


def _scratch_context(tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /a.txt\n")
    (ctx / "a.txt").write_text("a\n")
    return ctx


def test_a_context_first_means_build_and_repeated_flags_all_count(tmp_path):
    ctx = _scratch_context(tmp_path)
    res = ok(run_cli("--layout", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--progress",
                     "quiet", "-t", "one", "--label", "a=1", "-t", "two", "--label", "b=2", str(ctx)))
    _, desc, _, config = image(tmp_path, "one")
    assert res.stdout == desc["digest"] + "\n" and res.stderr == ""
    assert image(tmp_path, "two")[1]["digest"] == desc["digest"]
    assert config["config"]["Labels"] == {"a": "1", "b": "2"}
    named = ok(run_cli("build", "--layout", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                       "--progress", "quiet", "--label", "a=1", str(ctx), "--label", "b=2", "-t", "three"))
    assert named.stdout == res.stdout and image(tmp_path, "three")[1]["digest"] == desc["digest"]


def test_an_unknown_first_word_is_the_context_a_command_name_is_the_command(tmp_path):
    missing = tmp_path / "no-such-context"
    implicit = run_cli("--cache-dir", str(tmp_path / "cache"), str(missing))
    explicit = run_cli("build", "--cache-dir", str(tmp_path / "cache"), str(missing))
    assert implicit.exit_code == explicit.exit_code == 1
    assert implicit.stderr == explicit.stderr and implicit.stderr.startswith("orca-build: ")
    assert str(missing) in implicit.stderr and implicit.stderr.count("\n") == 1
    listed = run_cli("cache", "ls", "--cache-dir", str(tmp_path / "cache"))  # the command, not a context "cache"
    assert listed.exit_code == 0 and listed.output == ""


def test_version_is_one_line_and_ignores_the_rest():
    for args in (["--version"], ["--version", "--no-such-flag", "ctx"]):
        res = run_cli(*args)
        assert res.exit_code == 0 and res.stderr == ""
        assert re.fullmatch(r"orca-build version \d+\.\d+\.\d+\n", res.stdout), res.stdout


def test_help_lists_the_commands_and_each_commands_flags():
    top = run_cli("-h")
    assert top.exit_code == 0 and top.stderr == ""
    assert all(name in top.stdout for name in ("build", "pull", "push", "cache", "prune", "--version"))
    build = run_cli("build", "--help")
    assert build.exit_code == 0 and "--build-context" in build.stdout and "CONTEXT" in build.stdout
    assert "--keep-storage" in run_cli("prune", "-h").stdout and "--cache-dir" in run_cli("cache", "ls", "-h").stdout


@pytest.mark.parametrize("args, message", [
    (["--no-such-flag", "ctx"], "unrecognized arguments: --no-such-flag"),
    (["--lay=x", "ctx"], "unrecognized arguments: --lay=x"),  # no abbreviations
    ([], "the following arguments are required: CONTEXT"),
    (["ctx", "--jobs"], "argument --jobs: expected one argument"),
    (["cache"], "the following arguments are required: COMMAND"),
    (["cache", "nope"], "argument COMMAND: invalid choice: 'nope' (choose from 'ls')"),
    (["push", "tag-only"], "the following arguments are required: REF"),
    (["--jobs", "0", "ctx"], "Invalid value for '--jobs': 0 is not in the range x>=1."),
    (["--jobs", "many", "ctx"], "Invalid value for '--jobs': 'many' is not a valid integer range."),
    (["--progress", "loud", "ctx"], "Invalid value for '--progress': 'loud' is not one of 'auto', 'plain', 'quiet'."),
    (["--network", "bridge", "ctx"],
     "Invalid value for '--network': 'bridge' is not one of 'default', 'none', 'host'."),
    (["--build-arg", "A=1", "--build-arg", "=x", "ctx"], "Invalid value for --build-arg: '=x': expected K[=V]"),
    (["--secret", "id=a", "ctx"], "Invalid value for --secret: 'id=a': expected id=ID,src=PATH"),
    (["--secret", "id=a,src=/no/such/file", "ctx"],
     "Invalid value for --secret: 'id=a,src=/no/such/file': /no/such/file: no such file"),
    (["--ssh", "a=b,c", "ctx"], "Invalid value for --ssh: 'a=b,c': expected default|ID[=SOCKET] (one agent socket)"),
    (["--iidfile", "/tmp", "ctx"], "Invalid value for '--iidfile': File '/tmp' is a directory."),
    (["--tls-ca", "/", "ctx"], "Invalid value for '--tls-ca': File '/' is a directory."),
    (["prune", "--keep-storage", "lots"],
     "Invalid value for '--keep-storage': 'lots': not a size (e.g. 10GB, 512MB)"),
    (["prune", "--filter", "age=1h"], "Invalid value for '--filter': 'age=1h': the only filter is until=DURATION"),
    (["prune", "--filter", "until=1h", "--filter", "until=soon"],
     "Invalid value for '--filter': 'soon': not a duration (e.g. 24h, 90m, 1h30m)"),
])
def test_a_bad_command_line_is_one_line_and_exit_status_2(tmp_path, args, message):
    home = tmp_path / "xdg"  # the default cache dir and layout
    res = run_cli(*args, env={"XDG_CACHE_HOME": str(home), "XDG_DATA_HOME": str(home)})
    assert (res.exit_code, res.stdout, res.stderr) == (2, "", f"orca-build: {message}\n")
    assert not home.exists()
