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


def test_second_user_is_unprivileged_too():
    """The second user (for two-user tests) has no subordinate ids either, and
    sudo lets the test user become that user only, never root."""
    import subprocess

    other = os.environ["ORCA_USER2"]
    entry = pwd.getpwnam(other)
    assert entry.pw_uid not in (0, os.getuid())
    assert not _has_entry("/etc/subuid", other, entry.pw_uid)
    assert not _has_entry("/etc/subgid", other, entry.pw_uid)
    out = subprocess.run(["sudo", "-n", "-u", other, "id", "-u"], capture_output=True, text=True)
    assert out.stdout.strip() == str(entry.pw_uid)
    root = subprocess.run(["sudo", "-n", "-u", "root", "id", "-u"], capture_output=True, text=True)
    assert root.returncode != 0 and root.stdout.strip() != "0"
