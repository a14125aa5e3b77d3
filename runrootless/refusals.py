"""Why the container's setup was refused: the setting that forbids a call.

Container runtimes restrict what their workload may do with a seccomp
profile, an LSM profile (AppArmor), masks over /proc and host sysctls.  A
failed setup call is reported in one line naming the call, the errno and,
when one is recognised here, the setting behind it and what would allow it.
"""

from __future__ import annotations

import errno

from .linux import CallError

# Docker's and containerd's default profiles (Kubernetes RuntimeDefault) let
# unshare, clone with namespace flags, mount, umount2, pivot_root and
# sethostname through only with CAP_SYS_ADMIN, which a non-root container lacks.
SECCOMP_USERNS = (
    "the container's seccomp profile blocks user namespaces (Docker's and containerd's default profiles, "
    "Kubernetes seccompProfile RuntimeDefault, allow unshare, clone with CLONE_NEWUSER, mount and pivot_root "
    "only with CAP_SYS_ADMIN); allowed by --security-opt seccomp=unconfined, by podman's default profile, "
    "or by a Kubernetes seccompProfile of type Unconfined or a Localhost profile permitting them")
SECCOMP_CALL = ("the container's seccomp profile blocks it (the default profiles of podman, Docker and containerd "
                "allow it only with CAP_SYS_ADMIN); allowed by --security-opt seccomp=unconfined or a Kubernetes "
                "seccompProfile of type Unconfined")
_MOUNTING = ("mount(", "umount2(", "pivot_root(")


def describe(err: OSError) -> str:
    """One line: the call, its errno and, if recognised, the setting that forbids it."""
    if isinstance(err, CallError):
        text = str(err)
        why = _why(err.call, err.errno)
    else:
        name = errno.errorcode.get(err.errno, err.errno) if err.errno else type(err).__name__
        text = f"{err.filename}: {name} ({err.strerror})" if err.filename else f"{name} ({err.strerror or err})"
        why = ""
    return f"{text}: {why}" if why else text


def _why(call: str, err: int) -> str:
    if call.startswith("unshare(CLONE_NEWUSER"):
        return _why_userns(err)
    if err not in (errno.EPERM, errno.EACCES):
        return ""
    if call.startswith("mount(proc "):
        return ("the container runtime masks parts of /proc (the default of podman, Docker and Kubernetes "
                "procMount: Default), so the kernel refuses a new procfs")
    label = apparmor_label()
    if call.startswith(_MOUNTING) and label:
        return (f"the AppArmor profile {label!r} denies it (the default profiles of Docker and containerd say "
                "'deny mount'); allowed by --security-opt apparmor=unconfined or a Kubernetes "
                "appArmorProfile of type Unconfined")
    if seccomp_filtered():
        return SECCOMP_CALL
    return ""


def _why_userns(err: int) -> str:
    if err == errno.ENOSPC:
        return f"the sysctl user.max_user_namespaces is {_read('/proc/sys/user/max_user_namespaces')} " \
               "(or its limit is reached); a positive value allows them"
    if err == errno.EINVAL:
        return "this kernel has no user namespaces (CONFIG_USER_NS)"
    if err == errno.EUSERS:
        return "user namespaces are nested 32 deep already"
    if err != errno.EPERM:
        return ""
    if _read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        return "the sysctl kernel.unprivileged_userns_clone is 0; 1 allows them"
    if _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        return ("AppArmor restricts unprivileged user namespaces (sysctl "
                "kernel.apparmor_restrict_unprivileged_userns=1); 0, or an AppArmor profile with 'userns,', "
                "allows them")
    if seccomp_filtered():
        return SECCOMP_USERNS
    return "the kernel or a security module refuses unprivileged user namespaces here"


def seccomp_filtered() -> bool:
    """Whether a seccomp filter confines this process (Seccomp: 2 in /proc/self/status)."""
    try:
        with open("/proc/self/status") as fh:
            return any(line.split() == ["Seccomp:", "2"] for line in fh)
    except OSError:
        return False


def apparmor_label() -> str:
    """The AppArmor profile confining this process, "" when unconfined or without AppArmor."""
    for path in ("/proc/self/attr/apparmor/current", "/proc/self/attr/current"):
        label = _read(path).rstrip("\0").strip()
        if label:
            name = label.split(" (")[0]
            return "" if name == "unconfined" or ":" in name else name   # ":": an SELinux context
    return ""


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""
