"""orca-build with non-root users (issue 7) on the mmdebstrap Debian fixture, as the test user."""

from __future__ import annotations

import re

from orca.errors import BuildError
from orca_build_helpers import build, layer_files, manifest

APP = """\
FROM oci:{base}:bookworm
RUN useradd -m -u 1234 app
USER app
WORKDIR /home/app/work
RUN id -u && id -gn && mkdir d && touch d/f && ln -s d l && mkfifo p
COPY --chown=app:app x /home/app/x
"""


def context(tmp_path, text):
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(text)
    (ctx / "x").write_text("x\n")
    return ctx


def owners(tmp_path, result) -> dict[str, tuple[int, int]]:
    layout, man, _ = manifest(tmp_path, result)
    out = {}
    for desc in man["layers"][1:]:
        for name, (member, _) in layer_files(layout, desc).items():
            out[name.rstrip("/")] = (member.uid, member.gid)
    return out


def test_user_app_builds_with_owners_in_the_layers(tmp_path, debian_layout):
    result, log, _ = build(tmp_path, context(tmp_path, APP.format(base=debian_layout)))
    assert not isinstance(result, BuildError), log
    assert re.search(r"^#\d+ 1234$", log, re.M) and re.search(r"^#\d+ app$", log, re.M), log
    got = owners(tmp_path, result)
    for path in ("home/app", "home/app/work", "home/app/work/d", "home/app/work/d/f", "home/app/work/l",
                 "home/app/work/p", "home/app/x"):
        assert got[path] == (1234, 1234), path
    assert got["etc/shadow"] == (0, 42)


def test_user_cannot_write_etc(tmp_path, debian_layout):
    text = APP.format(base=debian_layout).split("WORKDIR")[0] + "RUN touch /etc/forbidden\n"
    result, log, _ = build(tmp_path, context(tmp_path, text))
    assert isinstance(result, BuildError)
    assert "Permission denied" in log + str(result)


def test_unknown_user_is_a_build_error_naming_it(tmp_path, debian_layout):
    text = f"FROM oci:{debian_layout}:bookworm\nUSER nosuch\nRUN true\n"
    result, log, _ = build(tmp_path, context(tmp_path, text))
    assert isinstance(result, BuildError)
    assert "nosuch" in str(result)


def test_cache_mount_uid_gid_mode(tmp_path, debian_layout):
    text = (f"FROM oci:{debian_layout}:bookworm\n"
            "RUN --mount=type=cache,target=/c,uid=1234,gid=99,mode=0750 stat -c 'cache %u:%g %a' /c\n")
    result, log, _ = build(tmp_path, context(tmp_path, text))
    assert not isinstance(result, BuildError), log
    assert re.search(r"^#\d+ cache 1234:99 750$", log, re.M), log
