"""The queue tests' own look into the database (``tests.queue_world.query``): a server
shared with test runs in parallel may have no connection slot free for a moment."""

from __future__ import annotations

import types
from typing import Any

import psycopg
import pytest

from tests import queue_world

URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TOO_MANY = (
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
    "FATAL:  sorry, too many clients already"
)


class _Connection:
    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, params: Any) -> Any:
        return types.SimpleNamespace(description=[("one",)], fetchall=lambda: [(1,)])


def _server(monkeypatch: pytest.MonkeyPatch, refusals: list[str]) -> list[str]:
    """A server that refuses the next connections with ``refusals``' words, then takes one."""
    left = list(refusals)

    def connect(conninfo: str, autocommit: bool) -> _Connection:
        if left:
            raise psycopg.OperationalError(left.pop(0))
        return _Connection()

    monkeypatch.setattr(queue_world.psycopg, "connect", connect)
    return left


def test_a_question_waits_for_a_free_connection_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    left = _server(monkeypatch, [TOO_MANY, TOO_MANY])
    assert queue_world.query(URL, "SELECT 1") == [(1,)]
    assert left == []


def test_any_other_refusal_fails_the_question_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    left = _server(monkeypatch, ['FATAL:  database "nowhere" does not exist', TOO_MANY])
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        queue_world.query(URL, "SELECT 1")
    assert left == [TOO_MANY]
