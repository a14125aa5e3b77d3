"""postgresql installed by orca-build as the unprivileged user: the same tree
as root's mmdebstrap install (its cluster is made by pg_createcluster, which
drops privileges the Perl way), and the image serves: the cluster starts
under runrootless and psql, as postgres, answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from oracle_build import build_set, differences, image_manifest, oracle

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    return build_set("postgresql", tmp_path_factory.mktemp("oracle-postgresql"))


def test_postgresql_is_identical_to_the_root_built_oracle(layout):
    diffs = differences(image_manifest(layout, "postgresql"), oracle("postgresql"))
    assert not diffs, f"{len(diffs)} differences:\n" + "\n".join(diffs[:80])


def test_postgresql_image_serves_a_query_under_runrootless(layout, tmp_path):
    bundle = tmp_path / "bundle"
    unpack = subprocess.run([BIN / "umoci-py", "unpack", "--rootless", "--image", f"{layout}:postgresql", bundle],
                            capture_output=True, text=True)
    assert unpack.returncode == 0, unpack.stderr
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sh", "-c", "pg_ctlcluster 15 main start && "
                                 "su postgres -c \"psql -Atc 'select current_user, 1+1'\""]
    (bundle / "config.json").write_text(json.dumps(config))
    run = subprocess.run([BIN / "runrootless", "run", "-b", bundle, "oracle-postgres"], capture_output=True,
                         text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert (run.returncode, run.stdout) == (0, "postgres|2\n"), run.stderr
