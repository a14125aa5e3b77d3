"""Package sets installed by orca-build as the unprivileged user match the
same packages installed as root by mmdebstrap (the oracle): every path's type,
mode with set-id bits, owner and group by name and number, symlink target and
file capability, and the package list.  postgresql has its own file."""

from __future__ import annotations

import pytest

from oracle_build import build_set, differences, image_manifest, oracle

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["login", "daemons"])
def test_package_set_is_identical_to_the_root_built_oracle(name, tmp_path):
    expected = oracle(name)
    layout = build_set(name, tmp_path)
    diffs = differences(image_manifest(layout, name), expected)
    assert not diffs, f"{len(diffs)} differences:\n" + "\n".join(diffs[:80])
