"""The emulators' shape: modules that import alone and without cycles, each a docstring.

Every module of ``crmcal.emulators`` is imported first, alone, in a fresh
interpreter (the emulator's other modules dropped between imports), so no module
works only when another happened to load first. Imports sit at the top of a module,
never inside a function (which is how a cycle hides), and the modules' imports of
each other make no cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import crmcal.emulators

ROOT = Path(crmcal.emulators.__file__).parent
PACKAGE = "crmcal.emulators"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((PACKAGE, *parts))] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The emulator modules ``name`` imports (a package's ``__init__`` left out: a
    package is always imported before its modules)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                )
                base = base.rstrip(".")
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    packages = {m for m, p in modules.items() if p.name == "__init__.py"}
    return {m for m in found if m in modules and m not in packages and m != name}


def test_every_module_has_a_docstring() -> None:
    for name, path in _modules().items():
        assert ast.get_docstring(ast.parse(path.read_text())), name


def test_no_import_inside_a_function() -> None:
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = [n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)]
                assert not inner, f"{name}.{node.name} imports at run time (line {inner[0].lineno})"


def test_routes_are_declared_at_module_level() -> None:
    """A route is a module's function on a module-level router, never a closure made
    inside a function (which would hold the state it was made with)."""
    verbs = {"get", "post", "put", "patch", "delete", "add_api_route", "add_route"}
    for name, path in _modules().items():
        for outer in ast.walk(ast.parse(path.read_text())):
            if not isinstance(outer, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            inner = [node for statement in outer.body for node in ast.walk(statement)]
            for node in inner:
                decorators = getattr(node, "decorator_list", [])
                calls = [node] if isinstance(node, ast.Call) else []
                for found in [*decorators, *calls]:
                    target = found.func if isinstance(found, ast.Call) else found
                    if isinstance(target, ast.Attribute) and target.attr in verbs:
                        owner = ast.unparse(target.value)
                        assert owner not in ("app", "router", "app.router"), (
                            f"{name}.{outer.name} declares a route (line {found.lineno})"
                        )


def test_the_modules_import_each_other_without_a_cycle() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join((*path[path.index(name) :], name))
        if name in done:
            return
        for other in sorted(graph[name]):
            visit(other, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())


def test_each_module_imports_alone() -> None:
    script = (
        "import importlib, sys\n"
        f"for name in {sorted(_modules())!r}:\n"
        f"    for loaded in [m for m in sys.modules if m.startswith({PACKAGE!r})]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
