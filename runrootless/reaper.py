"""Ending every process a container started when it has no pid namespace.

With a pid namespace the kernel kills everything in it when init exits.
Without one (a masked /proc, see procfs.py) init is a child subreaper, so
orphans of the workload are re-parented to it and everything the container
started stays its descendant; when the workload ends, or init's parent
dies, init kills them all and reaps them before it exits.
"""

from __future__ import annotations

import os
import signal

from . import linux


def adopt_orphans() -> None:
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)


def descendants(pid: int) -> list[int]:
    """Processes below pid, from every /proc/N/stat (/proc/N/task/N/children needs CONFIG_PROC_CHILDREN)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue   # exited meanwhile
        ppid = int(stat[stat.rindex(b")") + 2:].split(b" ", 2)[1])   # after "(comm)": state, ppid
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def end_all() -> None:
    """SIGKILL every descendant and reap until no child is left.

    A process forked just before its parent was killed is re-parented to us
    alive, so each round looks again before waiting for the next exit.
    """
    me = os.getpid()
    while True:
        for pid in descendants(me):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
