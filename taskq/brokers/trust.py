"""Whom the file broker trusts: the owners and modes of its root, folders and key.

dill/pickle run code on load, and a signature proves only that a file was
signed with the key in ``<root>/secret``. Whoever can write the root can
replace that key, or the queues, and have a worker run their code. So the
broker is used only while its root, its state folders and its key belong to
trusted users and nobody else can write them:

- trusted owners: the running user, root (who can do anything anyway), the
  users of ``broker_users`` and, with ``broker_group``, the group's members
  (they can read the key anyway);
- no folder writable by others, nor by a group other than ``broker_group``;
- the key readable by nobody else (by ``broker_group`` when it is set);
- no state folder that is a symbolic link (``lstat``: never followed; only
  the root itself may be a link, to where the broker really lives).

Folders are checked when this process first creates or uses them (a queue's
on its first publish or consume, then cached), the key whenever it is read,
and everything again when the supervisor re-checks (``trust_check_interval``):
nothing is checked per message.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BrokerError, ConfigError

if TYPE_CHECKING:
    from ..config import Settings


@dataclass(frozen=True)
class Trust:
    """Who may own the broker's files (``uids``) and which group shares it, if any."""

    uids: frozenset[int]
    gid: int | None = None
    group: str = ""

    @property
    def folder_mode(self) -> int:
        # setgid: what members create inside takes the group, not their own.
        return 0o2770 if self.gid is not None else 0o700

    @property
    def file_mode(self) -> int:
        # Group-writable: a member recycles (rewrites) the files another acked.
        return 0o660 if self.gid is not None else 0o600

    @property
    def key_mode(self) -> int:
        return 0o640 if self.gid is not None else 0o600


def private() -> Trust:
    """Trust for a broker of the running user alone."""
    return Trust(frozenset({os.geteuid(), 0}))


def trust_for(settings: Settings) -> Trust:
    """The trust ``broker_users`` and ``broker_group`` of ``settings`` describe."""
    uids = {os.geteuid(), 0, *(_uid(user) for user in settings.broker_users)}
    if not settings.broker_group:
        return Trust(frozenset(uids))
    gid, name = _group(settings.broker_group)
    return Trust(frozenset(uids | _members(gid, name)), gid, name)


def trusted_uids(settings: Settings) -> frozenset[int]:
    """Owners whose files the broker of ``settings`` may read: for a reader that
    ``fstat``s each file it opens and refuses the rest."""
    return trust_for(settings).uids


def _uid(user: str) -> int:
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ConfigError(
            f"broker_users: no user {user!r} on this system; give a user name or a uid"
        ) from None


def _group(group: str) -> tuple[int, str]:
    try:
        entry = grp.getgrgid(int(group)) if group.isdigit() else grp.getgrnam(group)
    except KeyError:
        raise ConfigError(
            f"broker_group: no group {group!r} on this system; create it with: groupadd {group}"
        ) from None
    me = os.geteuid()
    if me != 0 and entry.gr_gid != os.getegid() and entry.gr_gid not in os.getgroups():
        user = _name(me)
        raise ConfigError(
            f"broker_group: user {user} is not a member of group {entry.gr_name}; add it with: "
            f"usermod -aG {entry.gr_name} {user} (then log in again)"
        )
    return entry.gr_gid, entry.gr_name


def _members(gid: int, name: str) -> set[int]:
    uids = set()
    for member in grp.getgrnam(name).gr_mem:
        try:
            uids.add(pwd.getpwnam(member).pw_uid)
        except KeyError:
            continue  # a member listed in /etc/group with no account
    uids.update(p.pw_uid for p in pwd.getpwall() if p.pw_gid == gid)
    return uids


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


# -- the checks -------------------------------------------------------------------


def check_folder(path: Path, trust: Trust, root: Path, *, follow: bool = False) -> None:
    """Refuse ``path`` unless it is a real folder, owned by a trusted user and
    writable by nobody else. ``follow``: the root may be a link to the broker."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        raise BrokerError(
            f"broker folder {path} is missing (removed while in use?): "
            "restart the worker to make it again"
        ) from None
    except OSError as exc:
        raise BrokerError(f"cannot check broker folder {path}: {exc.strerror}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise BrokerError(
            f"broker folder {path} is a symbolic link, which could lead anywhere: "
            "remove the link (taskq makes the folder again)"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise BrokerError(f"broker path {path} is not a directory")
    _check_owner("folder", path, st, trust, root)
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_IWOTH:
        raise BrokerError(
            f"broker folder {path} is world-writable (mode {mode:o}): anyone could inject "
            f"code to run; fix it with: chmod {trust.folder_mode:o} {path}"
        )
    if mode & stat.S_IWGRP and st.st_gid != trust.gid:
        group = _group_name(st.st_gid)
        raise BrokerError(
            f"broker folder {path} is writable by group {group} (mode {mode:o}), which is not "
            f"broker_group: its members could inject code to run; fix it with: chmod g-w "
            f"{path}, or set broker_group = {group!r} if that group shares the broker"
        )


def check_key(path: Path, st: os.stat_result, trust: Trust, root: Path) -> None:
    """Refuse a key file (as ``fstat`` saw it) that others could read or replace."""
    if not stat.S_ISREG(st.st_mode):
        raise BrokerError(f"signing key {path} is not a regular file: remove it")
    _check_owner("key", path, st, trust, root)
    mode = stat.S_IMODE(st.st_mode)
    group_ok = trust.gid is not None and st.st_gid == trust.gid
    if mode & 0o007 or (mode & 0o070 and not group_ok):
        raise BrokerError(
            f"signing key {path} is readable by other users (mode {mode:o}): they could sign "
            f"code for a worker to run; fix it with: chmod {trust.key_mode:o} {path}, "
            "then replace the key: taskq key rotate"
        )


def _check_owner(what: str, path: Path, st: os.stat_result, trust: Trust, root: Path) -> None:
    if st.st_uid in trust.uids:
        return
    owner = _name(st.st_uid)
    raise BrokerError(
        f"broker {what} {path} is owned by {owner}, a user this process does not trust: "
        f"they could sign code for a worker to run; fix it with: chown -R {_name(os.geteuid())} "
        f"{root}, or trust them with broker_users = [{owner!r}]"
    )


def make_folder(path: Path, trust: Trust, root: Path) -> None:
    """Create ``path`` (private, or shared with the group) unless it exists; check it."""
    try:
        os.mkdir(path, 0o700 if trust.gid is None else 0o770)
    except FileExistsError:
        pass
    else:
        share(path, trust)
    check_folder(path, trust, root)


def share(path: Path, trust: Trust) -> None:
    """Give a folder this process made to ``broker_group``, setgid."""
    if trust.gid is None:
        return
    # A setgid parent already gave it the group, but not to the root, nor to a
    # folder root made; and a umask may have taken the group's bits.
    os.chown(path, -1, trust.gid)
    os.chmod(path, trust.folder_mode)


def check_umask(trust: Trust) -> None:
    """With a group, files made here must stay readable and writable by it."""
    if trust.gid is None:
        return
    mask = _umask()
    if mask & 0o060:
        raise BrokerError(
            f"broker_group {trust.group!r} is set, but this process's umask {mask:04o} takes "
            "the group's read/write away from the files it makes, so other members could not "
            "use them: run it with umask 007 (systemd: UMask=0007)"
        )


def _umask() -> int:
    # /proc tells without changing it; os.umask() would, for a moment, for every thread.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask
