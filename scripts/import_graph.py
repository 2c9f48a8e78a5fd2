"""The import graph of the fhirserver package, its cycles and its upward edges.

    .venv/bin/python scripts/import_graph.py [--graph]

Reads the source with ``ast`` (nothing is imported), so an import inside a function
or under ``if TYPE_CHECKING:`` counts the same as one at the top of a module. An
edge ``a -> b`` means module ``a`` names module ``b`` in an import statement;
``from .pkg import name`` points at ``pkg.name`` when that is a module, else at
``pkg`` itself. Importing a submodule does not add an edge to its parent package.

The layers, top first; a module may import its own layer or any layer below it:

    cli        fhirserver/__init__.py (create_app), cli.py
    api        api/, importer/
    use cases  interactions/, mpi/
    auth       auth/
    audit      audit/
    storage    storage/
    base       search/, model/, crypto/, config.py, errors.py, version.py

Prints the strongly connected components of more than one module and every edge
that goes up against that order; exits 1 if there is either. With ``--graph`` it
prints every module and what it imports first.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = "fhirserver"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("cli", frozenset({"", "cli"})),
    ("api", frozenset({"api", "importer", "demo"})),
    ("use cases", frozenset({"interactions", "mpi", "bulk"})),
    ("auth", frozenset({"auth"})),
    ("audit", frozenset({"audit"})),
    ("storage", frozenset({"storage"})),
    ("base", frozenset({"search", "model", "crypto", "config", "errors", "version"})),
)

Graph = dict[str, set[str]]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _resolve(name: str, known: Mapping[str, Path]) -> str | None:
    """The longest known module that ``name`` is, or lies in."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(name: str, path: Path, known: Mapping[str, Path]) -> set[str]:
    """The package modules that the module ``name`` at ``path`` imports."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = here.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                resolved = _resolve(target, known)
                if resolved is not None and resolved != name:
                    found.add(resolved)
    return found


def import_graph(root: Path = ROOT) -> Graph:
    known = modules(root)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def layer_of(module: str) -> int:
    """The index in LAYERS of a module's layer: 0 is the top."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    for index, (_, members) in enumerate(LAYERS):
        if top in members:
            return index
    raise ValueError(f"{module} is in no layer: add {top!r} to LAYERS")


def upward_edges(graph: Mapping[str, Iterable[str]]) -> list[tuple[str, str]]:
    """Every edge from a module to one in a layer above its own."""
    return sorted(
        (source, target)
        for source, targets in graph.items()
        for target in targets
        if layer_of(target) < layer_of(source)
    )


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:
        # Iterative, so a deep graph cannot hit the recursion limit.
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", action="store_true", help="print every module's imports")
    args = parser.parse_args(argv)
    graph = import_graph()
    if args.graph:
        for module in sorted(graph):
            print(f"{module} [{LAYERS[layer_of(module)][0]}]")
            for target in sorted(graph[module]):
                print(f"    -> {target}")
    components = cycles(graph)
    edges = upward_edges(graph)
    for component in components:
        print(f"cycle of {len(component)} modules:")
        for module in component:
            print(f"    {module}")
    for source, target in edges:
        print(
            f"upward: {source} [{LAYERS[layer_of(source)][0]}]"
            f" -> {target} [{LAYERS[layer_of(target)][0]}]"
        )
    if not components and not edges:
        print(f"{len(graph)} modules, no cycles, no upward imports")
    return 1 if components or edges else 0


if __name__ == "__main__":
    sys.exit(main())
