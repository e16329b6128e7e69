"""procrastinate's worker as crmcal runs it: the same worker, less the log context it
builds for every job whether or not anything is logged.

procrastinate passes each job's context (the job as a dict, its result, the worker) to
four log calls a job (loaded, started, ended, acknowledged), built before the call
asks whether its level is on: crmcal keeps the queue's logs at warnings
(``logs.queue_level``), so all four were made for nothing, a few dozen µs of a job.
Here the context is made only when a record is, with the same content.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import procrastinate
from procrastinate import worker as queue_worker


class LazyExtra(Mapping[str, Any]):
    """A log call's ``extra``, made at its first reading: ``logging`` reads it only when
    it makes a record, that is when the call's level is on."""

    __slots__ = ("_made", "_make")

    def __init__(self, make: Callable[[], dict[str, Any]]) -> None:
        self._make = make
        self._made: dict[str, Any] | None = None

    def _values(self) -> dict[str, Any]:
        if self._made is None:
            self._made = self._make()
        return self._made

    def __getitem__(self, key: str) -> Any:
        return self._values()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values())

    def __len__(self) -> int:
        return len(self._values())


class Worker(queue_worker.Worker):
    """procrastinate's worker, its log context made only for a record."""

    # procrastinate's is annotated as a dict; every use of it is a log call's ``extra``.
    def _log_extra(self, action: str, context: Any, job_result: Any, **kwargs: Any) -> Any:
        return LazyExtra(functools.partial(super()._log_extra, action, context, job_result,
                                           **kwargs))  # fmt: skip


class App(procrastinate.App):
    """procrastinate's app, whose workers are ``Worker``s."""

    def _worker(self, **kwargs: Any) -> queue_worker.Worker:
        return Worker(app=self, **{**self.worker_defaults, **kwargs})
