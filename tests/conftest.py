"""Shared fixtures: the base images built by tools/make-fixtures and fresh copies, the bookworm
bundle umoci-py unpacks from one (and private copies), a HOME of the second user."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fixtures_dir import FIXTURES


def _fixture_layout(name: str) -> Path:
    path = FIXTURES / name
    if not (path / "index.json").is_file():
        pytest.fail(f"fixture {path} missing: run tools/make-fixtures as root")
    return path


def _private_layout(tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name
    shutil.copytree(_fixture_layout(name), dest)
    return dest


@pytest.fixture
def busybox_layout(tmp_path) -> Path:
    """A private copy of the busybox layout (tag 'latest')."""
    return _private_layout(tmp_path, "busybox")


@pytest.fixture(scope="session")
def busybox_layout_ro() -> Path:
    """The shared read-only busybox layout, for tests that only read it."""
    return _fixture_layout("busybox")


@pytest.fixture
def debian_layout(tmp_path) -> Path:
    """A private copy of the mmdebstrap bookworm layout (tag 'bookworm')."""
    return _private_layout(tmp_path, "debian")


@pytest.fixture(scope="session")
def debian_layout_ro() -> Path:
    """The shared read-only bookworm layout, for tests that only read it."""
    return _fixture_layout("debian")


@pytest.fixture(scope="session")
def gomtree() -> Path:
    """go-mtree's manifest writer, built by tools/make-gomtree."""
    path = FIXTURES / "gomtree" / "gomtree"
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} missing: run tools/make-gomtree (setup-host does) as root")
    return path


@pytest.fixture(scope="module")
def plain_registry(tmp_path_factory):
    """A plain-HTTP docker-registry on loopback, for one module's tests."""
    from registry_server import Registry

    r = Registry(tmp_path_factory.mktemp("registry"))
    yield r
    r.stop()


@pytest.fixture(scope="session")
def debian_bundle(tmp_path_factory, debian_layout_ro) -> Path:
    """The bookworm fixture unpacked rootless by umoci-py once, for runrootless tests that only read it."""
    from umoci_py_helpers import umoci_py

    bundle = tmp_path_factory.mktemp("rr") / "bundle"
    umoci_py("unpack", "--rootless", "--image", f"{debian_layout_ro}:bookworm", bundle)
    return bundle


@pytest.fixture
def private_bundle(debian_bundle, tmp_path) -> Path:
    """A private copy of debian_bundle, for a test that changes it."""
    from runrootless_helpers import private_copy

    return private_copy(debian_bundle, tmp_path)


@pytest.fixture
def user2_home():
    """A fresh HOME owned by the second user, readable by this one."""
    from second_user import as_user2

    made = as_user2("mktemp", "-d", "/tmp/orca-user2.XXXXXX")
    assert made.returncode == 0, made.stderr
    home = Path(made.stdout.strip())
    try:
        assert as_user2("chmod", "0755", str(home)).returncode == 0
        yield home
    finally:
        as_user2("rm", "-rf", str(home))
