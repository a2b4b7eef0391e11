"""The file broker's file names: what a name in ready/ or scheduled/ says.

A ready/ name is the message's delivery-order key (``Message.name``). A
scheduled/ name puts the ETA in front of it, so a sorted listing of scheduled/
is the order in which messages come due, and promotion only strips the ETA.
"""

from __future__ import annotations

from ..message import Message


def scheduled_name(message: Message) -> str:
    """File name in scheduled/: the ETA first, then the ready/ name it will take."""
    return f"{int((message.eta or 0) * 1e6):017d}_{message.name}"


def ready_name_of(scheduled: str) -> str:
    """The ready/ name a scheduled/ file takes when its ETA passes."""
    return scheduled.partition("_")[2]


def eta_of(scheduled: str) -> float:
    """The ETA a scheduled/ name starts with; -1 for a name taskq did not make."""
    eta, sep, rest = scheduled.partition("_")
    if not (sep and rest and eta.isascii() and eta.isdigit()):
        return -1.0
    return int(eta) / 1e6


def id_of(name: str) -> str:
    """The message id at the end of a ready/ or scheduled/ file name."""
    parts = name.split("-", 2)  # priority, enqueue time, then the id (which may hold '-')
    return parts[2] if len(parts) == 3 else name


def id_in_state(state: str, name: str) -> str:
    """The message id a name carries in ``state`` (a scheduled name starts with its ETA)."""
    return id_of(ready_name_of(name) if state == "scheduled" else name)
