"""Image digests across rebuilds without SOURCE_DATE_EPOCH: a rebuild with no
change gives the same image, any change a new one with a new time."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone

from orca_build_helpers import build, context, manifest, step_states

DOCKERFILE = """\
FROM BASE AS tools
COPY tool.txt /tool.txt
FROM BASE
COPY hello.txt /hello.txt
COPY --from=tools /tool.txt /
ENV WHO=world
CMD ["cat", "/hello.txt"]
"""


def _ns(created: str) -> int:
    """An RFC3339Nano time as nanoseconds (its text does not sort: zeros are trimmed)."""
    whole, _, frac = created.removesuffix("Z").partition(".")
    seconds = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return int(seconds) * 1_000_000_000 + int(frac.ljust(9, "0"))


def _digest(tmp_path, ctx) -> tuple[str, str, dict]:
    assert "SOURCE_DATE_EPOCH" not in os.environ
    result, log, _ = build(tmp_path, ctx)
    assert not isinstance(result, Exception), log
    return result.descriptor["digest"], log, manifest(tmp_path, result)[2]


def test_no_change_rebuild_keeps_the_digest_a_change_makes_a_new_one(tmp_path, busybox_layout):
    ctx = context(tmp_path, busybox_layout, DOCKERFILE)
    (ctx / "hello.txt").write_text("hello\n")
    (ctx / "tool.txt").write_text("tool\n")
    first, _, config = _digest(tmp_path, ctx)

    again, log, same = _digest(tmp_path, ctx)
    assert set(step_states(log).values()) == {"CACHED"}, log
    assert again == first and same == config

    (ctx / "hello.txt").write_text("changed\n")
    changed, log, newer = _digest(tmp_path, ctx)
    assert step_states(log)["COPY hello.txt /hello.txt"] == "DONE"
    assert changed != first
    assert _ns(newer["created"]) > _ns(config["created"])
    assert _ns(newer["history"][-1]["created"]) > _ns(config["created"])

    (ctx / "tool.txt").write_text("other tool\n")  # a change in another stage
    assert _digest(tmp_path, ctx)[0] not in (first, changed)

    # the same inputs as the first build, all cached again: the first image
    (ctx / "hello.txt").write_text("hello\n")
    (ctx / "tool.txt").write_text("tool\n")
    assert _digest(tmp_path, ctx)[0] == first


def test_a_config_change_alone_gets_a_new_time(tmp_path, busybox_layout):
    ctx = context(tmp_path, busybox_layout, DOCKERFILE)
    (ctx / "hello.txt").write_text("hello\n")
    (ctx / "tool.txt").write_text("tool\n")
    first, _, config = _digest(tmp_path, ctx)
    (ctx / "Dockerfile").write_text((ctx / "Dockerfile").read_text().replace("WHO=world", "WHO=you"))
    second, log, changed = _digest(tmp_path, ctx)
    assert set(step_states(log).values()) == {"CACHED"}, log
    assert second != first
    assert _ns(changed["created"]) > _ns(config["created"])
    assert changed["history"][-2] == {**config["history"][-2], "created": changed["history"][-2]["created"],
                                      "created_by": "ENV WHO=you"}


def test_no_cache_rebuild_is_not_given_the_cached_times(tmp_path, busybox_layout):
    ctx = context(tmp_path, busybox_layout, DOCKERFILE)
    (ctx / "hello.txt").write_text("hello\n")
    (ctx / "tool.txt").write_text("tool\n")
    _, _, config = _digest(tmp_path, ctx)
    result, log, _ = build(tmp_path, ctx, no_cache=True)
    assert not isinstance(result, Exception), log
    assert _ns(manifest(tmp_path, result)[2]["created"]) > _ns(config["created"])


def test_no_change_rebuild_loads_no_sandbox_registry_or_layer_code(tmp_path, busybox_layout):
    """What start-up costs most (the runrootless tracer, HTTP/TLS, tar and
    layer code, and the socket and queue modules of the RUN helper and the
    layer jobs) is imported only by builds that run a step or use a registry.
    The imports are read from -X importtime: orca-build ends without the
    interpreter's teardown, so nothing runs after its main()."""
    ctx = context(tmp_path, busybox_layout, DOCKERFILE + "RUN cat /hello.txt /tool.txt > /both\n")
    (ctx / "hello.txt").write_text("hello\n")
    (ctx / "tool.txt").write_text("tool\n")
    first, _, _ = _digest(tmp_path, ctx)
    heavy = ["runrootless.api", "orca.registry.client", "http.client", "ssl", "urllib.request", "tarfile",
             "umoci_py.layer.extract", "umoci_py.layer.generate", "orca.snapshot", "orca.copyrootfs",
             "socket", "selectors", "queue"]
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "PYTHONPROFILEIMPORTTIME")}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "from orca.cli import main; main()",
                           "--layout", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                           "--progress", "quiet", str(ctx)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    imported = {line.rpartition("|")[2].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert proc.stdout.strip() == first
    assert {"orca.execute", "orca.steps"} <= imported  # the build's own imports, listed
    assert sorted(m for m in heavy if m in imported) == []
