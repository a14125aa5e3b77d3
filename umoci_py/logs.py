"""The library's warnings, through `logging` imported at the first one: its
import costs a process ~2 ms, and most runs (a build's commits, say) never
warn.  A caller routing the records elsewhere (orca's progress) is told
before the first one is logged."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable  # not typing: ~2 ms of every orca-build start

_lock = threading.Lock()
_before_first: list[Callable[[], None]] = []


def warning(name: str, msg: str, *args) -> None:
    """logging.getLogger(name).warning(msg, *args)."""
    import logging

    with _lock:
        hooks = _before_first[:]
        _before_first.clear()
    for hook in hooks:
        hook()
    logging.getLogger(name).warning(msg, *args)


def before_first_warning(hook: Callable[[], None]) -> None:
    """Run hook before the library logs its first warning: now, if logging
    is loaded already (its handlers can be set up at no cost then)."""
    with _lock:
        if "logging" not in sys.modules:
            _before_first.append(hook)
            return
    hook()


def forget(hook: Callable[[], None]) -> None:
    """hook is not to run after all (its caller is done)."""
    with _lock:
        if hook in _before_first:
            _before_first.remove(hook)
