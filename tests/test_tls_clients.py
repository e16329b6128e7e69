"""The tests' HTTP clients take the process's one TLS context (``crmcal.tls.tls()``):
an ``httpx`` client made without one builds its own, loading the CA bundle (about 20 ms
of CPU), though the tests talk plain http to their emulators and servers."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).parent
ONE_OFF = {"get", "post", "put", "patch", "delete", "head", "options", "request", "stream"}


def _own_contexts(path: Path) -> Iterator[str]:
    """Where ``path`` makes an ``httpx`` client, or a one-off call, with a TLS context of
    its own: no ``verify=`` given, and no ``transport=`` (an app's in-process one)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        made = node.func
        if not (isinstance(made.value, ast.Name) and made.value.id == "httpx"):
            continue
        if made.attr not in {"Client", "AsyncClient", *ONE_OFF}:
            continue
        given = {keyword.arg for keyword in node.keywords}
        if not given & {"verify", "transport"} and None not in given:
            yield f"{path.relative_to(TESTS.parent)}:{node.lineno}: httpx.{made.attr}"


def test_every_client_the_tests_make_shares_the_tls_context() -> None:
    found = [where for path in sorted(TESTS.rglob("*.py")) for where in _own_contexts(path)]
    assert found == [], "give verify=tls() (crmcal.tls), or use tests/plain.py:\n" + "\n".join(
        found
    )
