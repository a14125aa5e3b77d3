"""orca-build's live view in a real terminal (tmux): only the view writes to
it while it is live, a failure stays on screen with its output, and -q is
only the digest.  A Debian base, whose unpack logs one warning per device."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from orca.cache import CacheStore

ORCA_BUILD = str(Path(sys.executable).parent / "orca-build")
READY_TIMEOUT = 300  # seconds: a bound on the wait for a step to show, on a busy 2-core machine


class Tmux:
    """A private tmux server, with one window running one command."""

    def __init__(self, sock: Path):
        self.base = ["tmux", "-S", str(sock)]

    def start(self, command: str) -> None:
        # The window stays (cat reads the terminal) so it can be read after the
        # build.  Without scroll-on-clear, tmux keeps what an erase from the top
        # left clears (each redraw of a view that starts there) as history: the
        # history then holds only lines that really scrolled away.
        subprocess.run([*self.base, "-f", "/dev/null", "start-server", ";",
                        "set-option", "-g", "scroll-on-clear", "off", ";",
                        "new-session", "-d", "-x", "220", "-y", "60",
                        f"{command}; {' '.join(self.base)} wait-for -S finished; cat"], check=True)

    def screen(self) -> list[str]:
        """Everything the window shows or scrolled past."""
        out = subprocess.run([*self.base, "capture-pane", "-p", "-S", "-", "-E", "-"],
                             capture_output=True, text=True, check=True).stdout
        return [line.rstrip() for line in out.splitlines() if line.strip()]

    def wait_for_text(self, text: str) -> list[str]:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            lines = self.screen()
            if any(text in line for line in lines):
                return lines
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never showed: {self.screen()}")

    def wait_finished(self) -> list[str]:
        subprocess.run([*self.base, "wait-for", "finished"], check=True, timeout=READY_TIMEOUT)
        return self.screen()

    def stop(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


@pytest.fixture
def tmux(tmp_path):
    t = Tmux(tmp_path / "tmux.sock")
    yield t
    t.stop()


def _context(tmp_path: Path, debian: Path, run: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM oci:{debian}:bookworm\n{run}\n")
    return ctx


def _command(tmp_path: Path, ctx: Path) -> str:
    return (f"env TERM=xterm {ORCA_BUILD} --layout {tmp_path / 'out'} --cache-dir {tmp_path / 'cache'} {ctx}")


def _stray(lines: list[str]) -> list[str]:
    """Lines of the unpack's warnings that are not a step's lines."""
    return [line for line in lines if "creating empty file in place of device" in line and not line.startswith("#")]


@pytest.mark.slow
def test_live_view_is_alone_on_the_terminal(tmp_path, debian_layout_ro, tmux):
    # the step waits for the test: the view is read while it is live
    ctx = _context(tmp_path, debian_layout_ro, "RUN --mount=type=cache,id=gate,target=/gate "
                                                "echo step-is-running; while [ ! -e /gate/go ]; do sleep 0.05; done")
    tmux.start(_command(tmp_path, ctx))
    live = tmux.wait_for_text("step-is-running")
    assert [line for line in live if line.startswith("[+] Building")] == [live[0]]
    assert not _stray(live), live
    (CacheStore(tmp_path / "cache").mount_dir("gate") / "go").touch()
    final = tmux.wait_finished()
    assert not [line for line in final if line.startswith("[+] Building")], final
    assert not _stray(final), final
    assert final[0].startswith("#1 [stage-0] RUN --mount=type=cache") and " DONE " in final[0]
    assert final[1].startswith("[+] Built in ") and final[2].startswith("sha256:") and len(final) == 3


@pytest.mark.slow
def test_a_failure_stays_on_screen_with_its_output_and_one_error_line(tmp_path, debian_layout_ro, tmux):
    ctx = _context(tmp_path, debian_layout_ro, "RUN echo line-one && echo line-two >&2 && exit 3")
    tmux.start(_command(tmp_path, ctx))
    final = tmux.wait_finished()
    assert not _stray(final), final
    assert " ERROR: " in final[0]
    assert final[1:3] == ["#1 line-one", "#1 line-two"]
    assert final[3].startswith("[+] Built in ")
    assert final[4:] == [f"orca-build: {ctx / 'Dockerfile'}:2: RUN echo line-one && echo line-two >&2 && exit 3: "
                         "did not complete successfully: exit code 3"]


@pytest.mark.slow
def test_quiet_is_only_the_digest(tmp_path, debian_layout_ro):
    # a process of its own: in pytest's, its log capture would take the warnings
    ctx = _context(tmp_path, debian_layout_ro, "RUN echo made > /made")
    res = subprocess.run([ORCA_BUILD, "--layout", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                          "-q", str(ctx)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "" and res.stdout.startswith("sha256:") and len(res.stdout.split()) == 1
