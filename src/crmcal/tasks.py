"""Stopping a task we own without swallowing a cancellation aimed at ourselves.

The usual cleanup ``task.cancel(); with suppress(CancelledError): await task`` eats
more than the child's end: when the task running that cleanup is itself cancelled
while it awaits the child, asyncio hands that cancellation on to the child (the
future being awaited), and the CancelledError that comes back is suppressed too. The
cancelled task then goes on as if nothing had been asked of it: a sync returns as if
done, a worker loops back to its queue, and whoever waits for it to end waits forever.

``cancel_and_wait`` tells the two apart by the current task's count of cancellation
requests (``Task.cancelling``, Python 3.11+), as ``asyncio.timeout`` and TaskGroup do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def cancel_and_wait(child: asyncio.Future[Any]) -> None:
    """Cancel ``child`` and wait until it has ended (its cleanup finished).

    The child's own CancelledError is swallowed; any other exception it ends with is
    raised. A cancellation of the current task requested meanwhile (or one the child
    swallowed on its way) is raised as CancelledError once the child has ended."""
    await cancel_all_and_wait((child,))


async def cancel_all_and_wait(children: Iterable[asyncio.Future[Any]]) -> None:
    """``cancel_and_wait`` for several children at once: all are cancelled first, then
    awaited in turn; the first exception other than their cancellation is raised once
    all have ended."""
    children = list(children)
    current = asyncio.current_task()
    # Requests already counted belong to whoever is handling them (a cleanup running
    # because this task was cancelled re-raises that CancelledError itself).
    before = current.cancelling() if current is not None else 0
    for child in children:
        child.cancel()
    failure: BaseException | None = None
    for child in children:
        try:
            # Awaited even when this task is cancelled meanwhile: the cancellation is
            # handed to the child, which is already ending; its cleanup still runs first.
            await child
        except asyncio.CancelledError:
            pass  # its own, or ours handed on to it: told apart below
        except Exception as exc:
            failure = failure or exc
    if current is not None and current.cancelling() > before:
        raise asyncio.CancelledError from failure
    if failure is not None:
        raise failure


async def to_completion(work: Awaitable[T]) -> T:
    """Run ``work`` (a lease given back, a run recorded) to its end even when the
    current task is cancelled meanwhile, then raise that cancellation.

    ``await asyncio.shield(work)`` alone raises CancelledError at once and leaves the
    work running unawaited: whoever cancelled the task (a worker shutting down, a lost
    lease) takes it for ended and may close the database under the work. Here the
    cancellation waits for the work; a cancellation requested meanwhile (Task.cancelling,
    as in ``cancel_all_and_wait``) is raised once it has ended, never dropped."""
    current = asyncio.current_task()
    before = current.cancelling() if current is not None else 0
    task = asyncio.ensure_future(work)
    while not task.done():
        # Cancelled while waiting: the work goes on, and is awaited again.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)
    if current is not None and current.cancelling() > before:
        failure = None if task.cancelled() else task.exception()
        raise asyncio.CancelledError from failure
    return task.result()
