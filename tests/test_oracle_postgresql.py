"""postgresql installed by orca-build as the unprivileged user: the same tree
as root's mmdebstrap install (its cluster is made by pg_createcluster, which
drops privileges the Perl way), and the image serves: the cluster starts
under runrootless and psql, as postgres, answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from oracle_build import build_set, differences, image_manifest, oracle, run_in_image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    return build_set("postgresql", tmp_path_factory.mktemp("oracle-postgresql"))


def test_postgresql_is_identical_to_the_root_built_oracle(layout):
    diffs = differences(image_manifest(layout, "postgresql"), oracle("postgresql"))
    assert not diffs, f"{len(diffs)} differences:\n" + "\n".join(diffs[:80])


def test_postgresql_image_serves_a_query_under_runrootless(layout, tmp_path):
    run = run_in_image(layout, "postgresql", "pg_ctlcluster 15 main start && "
                       "su postgres -c \"psql -Atc 'select current_user, 1+1'\"", tmp_path)
    assert (run.returncode, run.stdout) == (0, "postgres|2\n"), run.stderr
