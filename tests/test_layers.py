"""The layers import only what they may know: a provider module its wire format (no
CRM, no sync), the CRM core no provider and no sync; only sync/ sees both."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import crmcal

ROOT = Path(crmcal.__file__).parent
FORBIDDEN = {
    "providers": ("crmcal.sync", "crmcal.crm", "crmcal.web", "crmcal.jobs"),
    "crm": ("crmcal.sync", "crmcal.providers", "crmcal.web", "crmcal.jobs"),
}


def _imports(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, also inside functions and TYPE_CHECKING blocks."""
    package = ["crmcal", *path.relative_to(ROOT).parent.parts]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


@pytest.mark.parametrize("layer", list(FORBIDDEN))
def test_a_layer_imports_nothing_it_may_not_know(layer: str) -> None:
    crossing = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / layer).rglob("*.py"))
        for name in _imports(path)
        if name.startswith(FORBIDDEN[layer])
    ]
    assert crossing == []
