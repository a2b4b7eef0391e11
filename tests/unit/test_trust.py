"""Tests for taskq.brokers.trust: a broker is used only while its root, state
folders and key belong to trusted users and nobody else can write them."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskq.brokers.file import FileBroker
from taskq.brokers.trust import Trust, trust_for, trusted_uids
from taskq.config import Settings
from taskq.errors import BrokerError, ConfigError
from taskq.housekeeping import TrustWatch
from taskq.keys import Keyring
from taskq.message import Message, decode, encode, new_id

OTHER = 65534  # nobody
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="giving files to another user (chown) needs root"
)


def other_user() -> str:
    return pwd.getpwuid(OTHER).pw_name


def other_group() -> tuple[int, str]:
    try:
        entry = grp.getgrgid(OTHER)
    except KeyError:
        pytest.skip(f"no group {OTHER} on this system")
    return entry.gr_gid, entry.gr_name


def publish(broker: FileBroker, keys: Keyring, queue: str = "default") -> Message:
    message = Message(id=new_id(), task="t", queue=queue, created=time.time())
    broker.publish(message, encode(message, b"p", keys))
    return message


def chown_tree(root: Path, uid: int, gid: int = -1) -> None:
    os.chown(root, uid, gid)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), uid, gid)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "broker"


# -- foreign owners ------------------------------------------------------------------


@needs_root
def test_root_owned_by_another_user_is_refused_naming_the_fix(root: Path) -> None:
    root.mkdir(mode=0o700)
    os.chown(root, OTHER, -1)

    with pytest.raises(BrokerError) as caught:
        FileBroker(root)

    message = str(caught.value)
    assert "\n" not in message
    assert f"broker folder {root} is owned by {other_user()}" in message
    assert f"chown -R {pwd.getpwuid(os.geteuid()).pw_name} {root}" in message
    assert f"broker_users = [{other_user()!r}]" in message
    assert os.listdir(root) == []  # nothing made inside before refusing


@needs_root
@pytest.mark.parametrize("folder", ["queues", "queues/default", "queues/default/ready", "results"])
def test_state_folder_owned_by_another_user_is_refused(root: Path, folder: str) -> None:
    broker = FileBroker(root)
    broker.queue_dir("default")
    os.chown(root / folder, OTHER, -1)

    with pytest.raises(BrokerError, match=f"{root / folder} is owned by {other_user()}"):
        FileBroker(root).queue_dir("default")
    with pytest.raises(BrokerError, match=f"{root / folder} is owned by"):
        broker.check_trust()  # the re-check of a broker already in use


@needs_root
def test_key_owned_by_another_user_is_refused(root: Path) -> None:
    FileBroker(root).keys()
    os.chown(root / "secret", OTHER, -1)

    with pytest.raises(BrokerError, match=f"key {root / 'secret'} is owned by {other_user()}"):
        FileBroker(root).keys()


@needs_root
def test_broker_users_lets_root_use_a_broker_owned_by_a_service_user(root: Path) -> None:
    FileBroker(root).keys()
    chown_tree(root, OTHER)
    with pytest.raises(BrokerError, match="owned by"):
        FileBroker(root)

    for user in (other_user(), str(OTHER)):  # a name or a uid
        trust = trust_for(Settings(broker_users=(user,)))
        broker = FileBroker(root, trust=trust)
        keys = broker.keys()
        message = publish(broker, keys)
        broker.check_trust()
        ready = root / "queues" / "default" / "ready" / message.name
        assert decode(ready.read_bytes(), keys)[0].id == message.id


def test_unknown_broker_user_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="broker_users: no user 'no-such-user-x'"):
        trust_for(Settings(broker_users=("no-such-user-x",)))


def test_trusted_uids_are_this_user_root_and_broker_users() -> None:
    assert trusted_uids(Settings()) == {os.geteuid(), 0}
    assert trusted_uids(Settings(broker_users=("4242",))) == {os.geteuid(), 0, 4242}


# -- modes and links -----------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_key_readable_by_others_is_refused(root: Path, mode: int) -> None:
    FileBroker(root).keys()
    (root / "secret").chmod(mode)

    with pytest.raises(BrokerError) as caught:
        FileBroker(root).keys()

    assert f"signing key {root / 'secret'} is readable by other users (mode {mode:o})" in str(
        caught.value
    )
    assert f"chmod 600 {root / 'secret'}" in str(caught.value)


def test_key_that_is_a_symbolic_link_is_refused(root: Path, tmp_path: Path) -> None:
    FileBroker(root)
    elsewhere = tmp_path / "key"
    elsewhere.write_bytes(b"k" * 64)
    elsewhere.chmod(0o600)
    (root / "secret").symlink_to(elsewhere)

    with pytest.raises(BrokerError, match="cannot read signing key"):
        FileBroker(root).keys()


@pytest.mark.parametrize("state", ["ready", "claimed", "dead"])
def test_state_folder_replaced_by_a_symbolic_link_is_refused(
    root: Path, tmp_path: Path, state: str
) -> None:
    broker = FileBroker(root)
    folder = broker.queue_dir("default") / state
    os.rmdir(folder)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    folder.symlink_to(elsewhere)

    with pytest.raises(BrokerError, match=f"{folder} is a symbolic link"):
        FileBroker(root).queue_dir("default")
    with pytest.raises(BrokerError, match=f"{folder} is a symbolic link"):
        broker.check_trust()


@pytest.mark.parametrize("name", ["rates", "unique", "events", "revoked", "schedule"])
def test_a_broker_folder_replaced_by_a_symbolic_link_is_refused_by_the_recheck(
    root: Path, tmp_path: Path, name: str
) -> None:
    broker = FileBroker(root)
    broker.queue_dir("default")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (root / name).symlink_to(elsewhere)

    with pytest.raises(BrokerError, match=f"{root / name} is a symbolic link"):
        broker.check_trust()


def test_queue_folder_that_is_a_symbolic_link_is_refused_by_the_recheck(
    root: Path, tmp_path: Path
) -> None:
    broker = FileBroker(root)
    broker.queue_dir("default")
    elsewhere = tmp_path / "other-broker"
    FileBroker(elsewhere).queue_dir("evil")
    (root / "queues" / "evil").symlink_to(elsewhere / "queues" / "evil")

    with pytest.raises(BrokerError, match="evil is a symbolic link"):
        broker.check_trust()


def test_group_writable_folder_is_refused_without_broker_group(root: Path) -> None:
    broker = FileBroker(root)
    (root / "results").chmod(0o770)

    with pytest.raises(BrokerError, match=r"results is writable by group .* broker_group"):
        FileBroker(root)
    with pytest.raises(BrokerError, match="chmod g-w"):
        broker.check_trust()


def test_world_writable_state_folder_is_refused(root: Path) -> None:
    broker = FileBroker(root)
    ready = broker.queue_dir("default") / "ready"
    ready.chmod(0o777)

    with pytest.raises(BrokerError, match=f"{ready} is world-writable"):
        broker.check_trust()


def test_a_trusted_broker_passes_the_recheck(root: Path) -> None:
    broker = FileBroker(root)
    keys = broker.keys()
    publish(broker, keys)
    broker.register_worker("w")
    broker.check_trust()
    broker.unregister_worker("w")


# -- a broker shared with a group ----------------------------------------------------


@pytest.fixture
def umask_007() -> Iterator[None]:
    old = os.umask(0o007)
    yield
    os.umask(old)


@needs_root
@pytest.mark.usefixtures("umask_007")
def test_group_shared_broker_is_made_setgid_and_accepted_with_broker_group(root: Path) -> None:
    gid, group = other_group()
    trust = trust_for(Settings(broker_group=group))
    assert trust.gid == gid and OTHER in trust.uids  # nobody's own group: a member

    broker = FileBroker(root, trust=trust)
    keys = broker.keys()
    message = publish(broker, keys)
    broker.register_worker("w")

    for folder in (root, root / "queues", root / "queues" / "default" / "ready", root / "results"):
        st = folder.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o2770, gid), folder
    key = (root / "secret").stat()
    assert (stat.S_IMODE(key.st_mode), key.st_gid) == (0o640, gid)
    ready = (root / "queues" / "default" / "ready" / message.name).stat()
    assert (stat.S_IMODE(ready.st_mode), ready.st_gid) == (0o660, gid)
    broker.check_trust()
    broker.unregister_worker("w")

    # Files made by another member are trusted too.
    chown_tree(root, OTHER, gid)
    FileBroker(root, trust=trust).check_trust()
    # Without broker_group the same broker is refused: group-writable, and not ours.
    with pytest.raises(BrokerError):
        FileBroker(root)


def test_broker_group_needs_a_umask_that_leaves_the_group_its_files(root: Path) -> None:
    trust = Trust(frozenset({os.geteuid(), 0}), gid=os.getegid(), group="g")
    old = os.umask(0o022)
    try:
        with pytest.raises(BrokerError, match=r"umask 0022 .* run it with umask 007"):
            FileBroker(root, trust=trust)
    finally:
        os.umask(old)
    assert not root.exists()


def test_unknown_broker_group_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="groupadd no-such-group-x"):
        trust_for(Settings(broker_group="no-such-group-x"))


# -- the supervisor's re-check -------------------------------------------------------


def test_trust_watch_rechecks_on_its_period_and_reports_once(root: Path) -> None:
    broker = FileBroker(root)
    watch = TrustWatch(broker, every=10.0)
    assert not watch.failed(100.0)
    (root / "results").chmod(0o777)

    assert not watch.failed(105.0)  # not due yet
    assert watch.failed(110.0)
    assert not watch.failed(200.0)  # reported once
    with pytest.raises(BrokerError, match="world-writable"):
        watch.raise_error()
