"""Workflows: signatures (``add.s(2, 2)``), ``chain``, ``group`` and ``chord``.

Nothing of a workflow lives in a process's memory. What follows a call travels
in its message (the envelope's ``workflow`` field, signed with the rest): the
next step of a chain, the links, the chord it belongs to and the chord's
callback, each as a *step*, an envelope prepared in the caller (so every id,
hence every result handle, is known up front) with its pickled call. The
worker that settles a message publishes the follow-ups before the ack
(``taskq.workflow``); a chord's member results wait in the broker (``Chords``).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import TaskqError
from .message import Message, dump_call, envelope, envelope_from, load_value, new_id
from .results import AsyncResult

if TYPE_CHECKING:
    from .app import App
    from .task import Task

# What .set() and apply_async accept, as Task.apply_async takes them.
_OPTIONS = frozenset({"countdown", "eta", "priority", "queue", "expires", "task_id", "headers"})
_NOTHING: Any = object()

Step = dict[str, Any]  # a prepared call: JSON, carried in its parent's envelope


class Signature:
    """A task call with its arguments and options, not sent yet: ``add.s(2, 2)``.

    ``immutable`` (``add.si(...)``): a chain or link does not give it the parent's
    result. Arguments given later (``sig.delay(x)``) come before its own, as in Celery.
    """

    def __init__(
        self,
        task: Task[Any, Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        immutable: bool = False,
    ) -> None:
        self.task = task
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.options = _check_options(task.name, options or {})
        self.immutable = immutable

    def __repr__(self) -> str:
        call = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"{self.task.name}{'.si' if self.immutable else '.s'}({call})"

    def __or__(self, other: Signature | chain) -> chain:
        return chain(self, other)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run inline, in this process."""
        return self.task(*args, *self.args, **{**self.kwargs, **kwargs})

    def set(self, **options: Any) -> Signature:
        """The same call with more options (``countdown``, ``queue``, ``priority``...)."""
        return Signature(
            self.task, self.args, self.kwargs, {**self.options, **options}, self.immutable
        )

    def clone(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> Signature:
        """This call with ``args`` put before its own (unless immutable) and more kwargs."""
        before = () if self.immutable else tuple(args)
        return Signature(
            self.task,
            (*before, *self.args),
            {**self.kwargs, **(kwargs or {})},
            self.options,
            self.immutable,
        )

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        link: Signature | Sequence[Signature] | None = None,
        link_error: Signature | Sequence[Signature] | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Send the call; ``link`` runs with its result, ``link_error`` with its id if it fails."""
        sig = self.clone(args, kwargs).set(**options)
        step = prepare(sig, links(link, link_error))
        return publish_first(sig.task.app, step)


class chain:  # noqa: N801 - Celery's name
    """``chain(a.s(1), b.s(), c.s())``: each task's result is the first argument
    of the next. Its result is the last task's; a failing step (for good, after
    its retries) stops the chain, and ``.get()`` raises that step's error."""

    tasks: list[Signature]

    def __init__(self, *tasks: Signature | chain | Iterable[Signature]) -> None:
        flat: list[Signature] = []
        for item in tasks:
            if isinstance(item, chain):
                flat += item.tasks
            elif isinstance(item, Signature):
                flat.append(item)
            elif isinstance(item, group | chord):
                raise TaskqError(
                    f"chain takes task signatures, not a {type(item).__name__}: put the "
                    "group in a chord instead (see docs/workflows.md)"
                )
            else:
                flat += [_signature(s, "chain") for s in item]
        if not flat:
            raise TaskqError("chain needs at least one task signature")
        self.tasks = flat

    def __or__(self, other: Signature | chain) -> chain:
        return chain(self, other)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        link: Signature | Sequence[Signature] | None = None,
        link_error: Signature | Sequence[Signature] | None = None,
    ) -> AsyncResult[Any]:
        """Send the first task (with ``args`` before its own); ``link`` follows the
        last task, ``link_error`` any task that fails."""
        sigs = [self.tasks[0].clone(args, kwargs), *self.tasks[1:]]
        ids = [s.options.get("task_id") or new_id() for s in sigs]
        errbacks = links(None, link_error)
        step: Step | None = None
        for k in reversed(range(len(sigs))):
            flow = dict(errbacks)
            if step is not None:
                flow["next"], flow["fail"] = step, ids[k + 1 :]
            else:
                flow.update(links(link, None))
            step = prepare(sigs[k].set(task_id=ids[k]), flow)
        assert step is not None
        publish_first(sigs[0].task.app, step)
        return sigs[-1].task.app.AsyncResult(ids[-1])


class GroupResult:
    """The results of a group, in the group's order."""

    def __init__(self, results: Sequence[AsyncResult[Any]], group_id: str = "") -> None:
        self.id = group_id or new_id()
        self.results = list(results)

    def __repr__(self) -> str:
        return f"<GroupResult {self.id} of {len(self.results)}>"

    def __iter__(self) -> Iterator[AsyncResult[Any]]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def get(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Every value in order, waiting ``timeout`` s in all; raises the first
        failure in the group's order (``propagate=False``: the error in its place)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            values.append(result.get(timeout=left, propagate=propagate))
        return values

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        return any(r.failed() for r in self.results)

    def completed_count(self) -> int:
        return sum(r.successful() for r in self.results)


class group:  # noqa: N801 - Celery's name
    """``group([add.s(1, 1), add.s(2, 2)])``: the tasks run in parallel; the
    result's ``.get()`` returns their values in order, or raises the first
    failure in that order."""

    def __init__(self, *tasks: Signature | Iterable[Signature]) -> None:
        flat: list[Signature] = []
        for item in tasks:
            if isinstance(item, Signature):
                flat.append(item)
            else:
                flat += [_signature(s, "group") for s in item]
        self.tasks = flat

    def delay(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        link: Signature | Sequence[Signature] | None = None,
        link_error: Signature | Sequence[Signature] | None = None,
    ) -> GroupResult:
        """Send every task (``args`` before each one's own); links go on each task."""
        return GroupResult(
            [
                s.clone(args, kwargs).apply_async(link=link, link_error=link_error)
                for s in self.tasks
            ]
        )


class chord:  # noqa: N801 - Celery's name
    """``chord(group, callback)``: once every task of the group has ended, the
    callback runs once with the list of their results (in order). A member that
    fails for good sends the callback to the dead letters instead (reason
    ``chord-failed``, naming the member), and the chord's ``.get()`` raises."""

    def __init__(self, header: group | Iterable[Signature], body: Signature | None = None) -> None:
        self.header = header if isinstance(header, group) else group(header)
        self.body = body

    def __call__(self, body: Signature) -> AsyncResult[Any]:
        """``chord(header)(callback)``: send it, as Celery spells it."""
        return chord(self.header, body).apply_async()

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        link: Signature | Sequence[Signature] | None = None,
        link_error: Signature | Sequence[Signature] | None = None,
    ) -> AsyncResult[Any]:
        """Send the group (``args`` before each task's own); the result is the
        callback's; ``link`` and ``link_error`` go on the callback."""
        if self.body is None:
            raise TaskqError("chord needs a callback: chord(group, callback)")
        body = _signature(self.body, "chord callback")
        callback_id = body.options.get("task_id") or new_id()
        callback = prepare(body.set(task_id=callback_id), links(link, link_error))
        app = body.task.app
        members = [s.clone(args, kwargs) for s in self.header.tasks]
        if not members:  # nothing to wait for: the callback runs with no results
            message, payload = materialize(callback, prepend=[])
            app.publish(message, payload)
        chord_id = new_id()
        for index, sig in enumerate(members):
            flow = {"chord": {"id": chord_id, "index": index, "total": len(members)}}
            flow["chord"]["callback"] = callback
            publish_first(sig.task.app, prepare(sig, flow))
        return app.AsyncResult(callback_id)


# -- steps: prepared calls that travel in their parent's envelope ---------------------


def links(
    link: Signature | Sequence[Signature] | None, link_error: Signature | Sequence[Signature] | None
) -> dict[str, Any]:
    """The ``workflow`` entries of a call's links, prepared."""
    flow: dict[str, Any] = {}
    if link is not None:
        flow["link"] = [prepare(_signature(s, "link"), {}) for s in _listed(link)]
    if link_error is not None:
        flow["link_error"] = [prepare(_signature(s, "link_error"), {}) for s in _listed(link_error)]
    return flow


def prepare(sig: Signature, workflow: Mapping[str, Any]) -> Step:
    """The envelope of a call as a step: everything but its creation time (and an
    ETA from ``countdown``), which are set when it is sent."""
    options = dict(sig.options)
    countdown = options.pop("countdown", None)
    message = sig.task.message(sig.args, sig.kwargs, **options)
    header = envelope(message)
    header.pop("created", None)
    if workflow:
        header["workflow"] = dict(workflow)
    call = dump_call(sig.task.name, sig.args, sig.kwargs)
    return {
        "envelope": header,
        "call": base64.b64encode(call).decode(),
        "countdown": countdown,
        "immutable": sig.immutable,
    }


def materialize(
    step: Step, *, prepend: Any = _NOTHING, workflow: Mapping[str, Any] | None = None
) -> tuple[Message, bytes]:
    """The message a step sends now: ``prepend`` goes before its arguments (the
    parent's result; not for an immutable step), ``workflow`` adds to its own."""
    header = dict(step["envelope"])
    now = time.time()
    header["created"] = now
    if step.get("countdown") is not None:
        header["eta"] = now + float(step["countdown"])
    if workflow:
        header["workflow"] = {**header.get("workflow", {}), **workflow}
    payload = base64.b64decode(step["call"])
    if prepend is not _NOTHING and not step.get("immutable"):
        args, kwargs = load_value(payload)
        payload = dump_call(header["task"], (prepend, *args), kwargs)
    return envelope_from(header), payload


def publish_first(app: App, step: Step) -> AsyncResult[Any]:
    """Send a workflow's first call from the caller (eager mode runs it here)."""
    message, payload = materialize(step)
    app.publish(message, payload)
    return app.AsyncResult(message.id)


def _check_options(task: str, options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise TaskqError(
            f"signature of {task}: unknown option(s) {', '.join(unknown)}; "
            f"use {', '.join(sorted(_OPTIONS))}"
        )
    return dict(options)


def _listed(value: Signature | Sequence[Signature]) -> list[Any]:
    return [value] if isinstance(value, Signature) else list(value)


def _signature(value: Any, where: str) -> Signature:
    if not isinstance(value, Signature):
        raise TaskqError(
            f"{where} takes task signatures such as add.s(2, 2), got {value!r:.80} "
            f"({type(value).__name__})"
        )
    return value
