"""Package sets installed by orca-build as the unprivileged user match the
same packages installed as root by mmdebstrap (the oracle): every path's type,
mode with set-id bits, owner and group by name and number, symlink target and
file capability, and the package list.  postgresql has its own file."""

from __future__ import annotations

from pathlib import Path

import pytest

from oracle_build import build_set, differences, image_manifest, oracle, run_in_image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> the layout holding that set's image, each set built once."""
    layouts: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in layouts:
            layouts[name] = build_set(name, tmp_path_factory.mktemp(f"oracle-{name}"))
        return layouts[name]
    return get


@pytest.mark.parametrize("name", ["login", "daemons"])
def test_package_set_is_identical_to_the_root_built_oracle(name, built):
    diffs = differences(image_manifest(built(name), name), oracle(name))
    assert not diffs, f"{len(diffs)} differences:\n" + "\n".join(diffs[:80])


def test_getcap_and_setcap_see_the_capability_an_unprivileged_unpack_kept(built, tmp_path):
    # ping's cap_net_raw cannot be set by the unpacking user: it is in our record,
    # which getcap reads and setcap changes under runrootless, and repack writes back.
    run = run_in_image(built("login"), "login", "getcap /usr/bin/ping; setcap cap_net_admin+ep /usr/bin/ping;"
                       " getcap /usr/bin/ping; setcap -r /usr/bin/ping; getcap /usr/bin/ping; echo end", tmp_path)
    assert (run.returncode, run.stdout) == (0, "/usr/bin/ping cap_net_raw=ep\n/usr/bin/ping cap_net_admin=ep\nend\n"), \
        run.stderr
