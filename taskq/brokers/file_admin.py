"""What the file broker does besides moving messages: counts, dead letters,
purges, lookups for ``taskq`` commands and results, and the clean-up sweeps."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import TaskqError
from ..message import validate_queue
from .base import DeadLetter, QueueCounts
from .file_chords import FileChords
from .file_stores import FileStores
from .file_unique import FileUniques
from .fs import read_file, read_signed, removal_steps
from .names import id_of
from .spares import KEEP, UNUSED_FOR, SparePool

_SPARES_A_SWEEP = 5_000  # spares deleted at most by one sweep
_TMP_MAX_AGE = 300.0  # a tmp/ file older than this belongs to a crashed writer


class FileAdmin(FileStores, FileChords, FileUniques):
    """Inspection and maintenance over the layout ``FileBroker`` keeps."""

    spares: SparePool
    queue_dir: Callable[[str], Path]
    queues: Callable[[], list[str]]
    revocation_steps: Callable[[float], Iterator[bool]]

    def counts(self) -> dict[str, QueueCounts]:
        out = {}
        for queue in self.queues():
            qdir = self.queue_dir(queue)
            claimed = sum(
                len(os.listdir(e.path)) - 1 for e in os.scandir(qdir / "claimed") if e.is_dir()
            )
            dead = sum(1 for n in os.listdir(qdir / "dead") if n.endswith(".json"))
            out[queue] = QueueCounts(
                ready=len(os.listdir(qdir / "ready")),
                scheduled=len(os.listdir(qdir / "scheduled")),
                claimed=max(claimed, 0),
                dead=dead,
            )
        return out

    def dead_letters(self, queue: str | None = None) -> list[DeadLetter]:
        letters = []
        for q in [queue] if queue else self.queues():
            dead = self.queue_dir(q) / "dead"
            names = set(os.listdir(dead))
            for record_name in names:
                name = record_name.removesuffix(".json")
                # Its record is written first: a record alone is a message on its way.
                if record_name.endswith(".json") and name in names:
                    letters.append(DeadLetter(q, name, _read_record(dead / record_name)))
        return sorted(letters, key=lambda d: (str(d.record.get("died_at", "")), d.name))

    def dead_message(self, letter: DeadLetter) -> bytes:
        data = read_signed(str(self.queue_dir(letter.queue) / "dead" / letter.name))
        if data is None:
            raise TaskqError(f"dead message {letter.id} is gone (retried or purged meanwhile)")
        return data

    def remove_dead(self, letter: DeadLetter) -> None:
        dead = self.queue_dir(letter.queue) / "dead"
        for path in (dead / letter.name, dead / f"{letter.name}.json"):
            with contextlib.suppress(FileNotFoundError):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)  # a folder quarantined from ready/
                else:
                    path.unlink()

    def purge(self, queue: str) -> int:
        qdir = self.queue_dir(validate_queue(queue))
        removed = 0
        for state in ("ready", "scheduled"):
            for name in os.listdir(qdir / state):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(qdir / state / name)
                    removed += 1
        return removed

    def find(self, task_id: str) -> str | None:
        # The folders are named after the contract's states: a folder's name is the answer.
        for queue in self.queues():
            qdir = self.queue_dir(queue)
            with os.scandir(qdir / "claimed") as entries:  # closed on the early return
                for entry in entries:
                    if entry.is_dir() and any(id_of(n) == task_id for n in os.listdir(entry.path)):
                        return "claimed"
            for state in ("ready", "scheduled", "dead"):
                if any(id_of(n) == task_id for n in os.listdir(qdir / state)):
                    return state
        return None

    def housekeeping_steps(self, now: float, results_before: float) -> Iterator[bool]:
        # Litter is only this broker's: the supervisor knows results, not tmp/.
        yield from self.sweep_steps(results_before, now - _TMP_MAX_AGE)
        # A chord expires with results: one unchanged since then is abandoned.
        yield from self.chord_expiry_steps(results_before)
        # Unique keys whose holder was never released, once their lifetime passed.
        yield from self.unique_expiry_steps(now)
        yield from self.revocation_steps(now)

    def sweep_tmp(self, older_than: float) -> int:
        """Delete litter from crashed writers (and surplus recycled files); return how many."""
        return sum(self.litter_steps(older_than))

    def sweep_steps(self, results_before: float, litter_before: float) -> Iterator[bool]:
        """``expire_results`` and ``sweep_tmp`` as one walk, a step (one file) at a time."""
        yield from self.expiry_steps(results_before)
        yield from self.litter_steps(litter_before)

    def litter_steps(self, older_than: float) -> Iterator[bool]:
        for queue in self.queues():
            yield from removal_steps(self.queue_dir(queue) / "tmp", older_than)
        # Spares beyond KEEP and unused ones, at most _SPARES_A_SWEEP a sweep so
        # that the frees are spread out.
        removed = 0
        for step in removal_steps(self.spares.folder, time.time() - UNUSED_FOR, keep=KEEP):
            removed += step
            yield step
            if removed >= _SPARES_A_SWEEP:
                break
        yield from removal_steps(self._results, older_than, only_prefix=".")


def _read_record(path: Path) -> dict[str, Any]:
    """A dead letter's record; one that cannot be read says so instead of failing
    the whole listing."""
    try:
        record = json.loads(read_file(str(path), limit=1 << 24) or b"{}")
    except (TaskqError, ValueError) as exc:
        return {"reason": "unreadable-record", "exc_message": f"{path.name}: {exc}"}
    if not isinstance(record, dict):
        return {"reason": "unreadable-record", "exc_message": f"{path.name}: not a JSON object"}
    return record
