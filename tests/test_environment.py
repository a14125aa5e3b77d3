"""The suite proves rootless behaviour only if it really runs without privilege."""

import os
import pwd


def _has_entry(path: str, user: str, uid: int) -> bool:
    try:
        with open(path) as f:
            return any(line.split(":")[0] in (user, str(uid)) for line in f if line.strip())
    except FileNotFoundError:
        return False


def test_runs_as_unprivileged_user_without_subordinate_ids():
    uid = os.getuid()
    user = pwd.getpwuid(uid).pw_name
    assert uid != 0 and os.geteuid() != 0
    assert not _has_entry("/etc/subuid", user, uid)
    assert not _has_entry("/etc/subgid", user, uid)


def test_no_capabilities():
    with open("/proc/self/status") as f:
        caps = {k: v.strip() for k, v in (line.split(":", 1) for line in f) if k.startswith("Cap")}
    assert int(caps["CapEff"], 16) == 0
    assert int(caps["CapPrm"], 16) == 0
