"""Giving up root once the capture sockets are open.

Live capture needs ``CAP_NET_RAW`` only to open its AF_PACKET sockets. A sensor started
as root (``avmon live --user avmon``) opens them, then :func:`drop_privileges` switches
to the unprivileged user for good: supplementary groups cleared, the user's primary
group, then the user id (real, effective and saved), after which no capability is left.
Parsing hostile traffic then runs with nothing an attacker could use. Under systemd the
unit starts the sensor as its user directly, with the capability granted as an ambient
one (``contrib/avmon.service``); ``drop_privileges`` is then a no-op.
"""

from __future__ import annotations

import os
import pwd

from monitor.errors import CaptureError, ConfigError

__all__ = ["PrivilegeError", "capabilities_note", "drop_privileges"]


class PrivilegeError(CaptureError):
    """Switching to the unprivileged user failed (the message says which step and why)."""


def capabilities_note() -> str:
    """How to give avmon what live capture needs (for docs and error messages)."""
    return ("live capture needs CAP_NET_RAW (CAP_NET_ADMIN too for interface settings): run "
            "as root with --user USER to drop to USER once the sockets are open, or run as "
            "USER with the capabilities granted (systemd AmbientCapabilities=CAP_NET_RAW "
            "CAP_NET_ADMIN, see contrib/avmon.service; or setcap cap_net_raw,cap_net_admin=eip "
            "on the interpreter)")


def drop_privileges(user: str) -> None:
    """Become ``user`` (name or numeric uid) for the rest of the process's life.

    Call after the capture sockets are open. Clears the supplementary groups, sets the
    real, effective and saved group id to the user's primary group and then the user id
    likewise; the kernel clears every capability when the last root uid goes. A no-op
    when the process already runs as ``user`` with its primary group. Raises ConfigError
    for an unknown user, PrivilegeError if a step fails (not root, say) or if root could
    be regained afterwards.
    """
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError, OverflowError):
        raise ConfigError(f"--user: no such user '{user}'") from None
    uid, gid = entry.pw_uid, entry.pw_gid
    if os.getresuid() == (uid, uid, uid) and os.getresgid() == (gid, gid, gid):
        return
    name = entry.pw_name
    for what, step in (("clear supplementary groups", _clear_groups),
                       (f"set group id {gid}", _set_gid), (f"set user id {uid}", _set_uid)):
        try:
            step(uid, gid)
        except OSError as exc:
            raise PrivilegeError(f"--user {name}: cannot {what}: {exc.strerror} (switching "
                                 "users needs root; " + capabilities_note() + ")") from None
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise PrivilegeError(f"--user {name}: user/group ids not fully changed")
    if uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            return
        raise PrivilegeError(f"--user {name}: root could be regained after dropping it")


def _clear_groups(uid: int, gid: int) -> None:
    os.setgroups([])


def _set_gid(uid: int, gid: int) -> None:
    os.setresgid(gid, gid, gid)


def _set_uid(uid: int, gid: int) -> None:
    os.setresuid(uid, uid, uid)
