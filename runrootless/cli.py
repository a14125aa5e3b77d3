"""`runrootless run`: a runc-like front end over runrootless.api."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from umoci_py.errors import UmociError

from . import api


def _state_dir(root: str | None) -> Path:
    if root:
        return Path(root)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "runrootless" if runtime else Path(f"/tmp/runrootless-{os.getuid()}")


@click.group()
@click.version_option(package_name="rootless-oci-tools", prog_name="runrootless",
                      message="%(prog)s version %(version)s")
def main() -> None:
    """Run OCI bundles without privileges, emulating root for package managers."""


@main.command("run")
@click.option("-b", "--bundle", default=".", show_default=True, help="bundle directory (config.json, rootfs)")
@click.option("--pid-file", type=click.Path(dir_okay=False), help="write the container init's pid here")
@click.option("--root", "root", help="state directory (default $XDG_RUNTIME_DIR/runrootless)")
@click.option("--no-emulation", is_flag=True, help="plain user namespace: no ptrace, no fake ids/owners")
@click.option("--no-notify", is_flag=True,
              help="trace every process and stop at every emulated call with ptrace, without seccomp user "
                   "notification (slower; for kernels before 5.5)")
@click.argument("container_id")
def run_cmd(bundle: str, pid_file: str | None, root: str | None, no_emulation: bool, no_notify: bool,
            container_id: str) -> None:
    """Run the bundle's process as container ID; exits with its status."""
    try:
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise api.UsageError(f"invalid container id {container_id!r}")
        spec = api.spec_from_bundle(bundle)
        spec.emulate = not no_emulation
        state = _state_dir(root) / container_id
        state.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            state.mkdir(mode=0o700)
        except FileExistsError:
            raise api.UsageError(f"{state}: container {container_id} already exists") from None
        try:
            def started(pid: int) -> None:
                (state / "pid").write_text(f"{pid}\n")
                if pid_file:
                    Path(pid_file).write_text(f"{pid}")
            status = api.run(spec, on_start=started, notify=not no_notify)
        finally:
            for leftover in state.iterdir():
                leftover.unlink()
            state.rmdir()
    except UmociError as err:
        click.echo(f"runrootless: {err}", err=True)
        sys.exit(1)
    sys.exit(status)
