"""The package's imports run one way: cli → api → interactions/mpi → auth → audit →
storage → search/model, and no modules import each other in a circle.

The graph comes from scripts/import_graph.py, which reads the source without
importing it; imports inside functions count.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "import_graph.py"

#: Cycles waiting for a change inside one package, and why. Remove an entry with its
#: fix: test_known_cycles_are_still_there fails once the cycle is gone.
KNOWN_CYCLES: dict[tuple[str, ...], str] = {}


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


ig = _load()


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return ig.import_graph()


def test_every_module_has_a_layer(graph: dict[str, set[str]]) -> None:
    for module in graph:
        ig.layer_of(module)


def test_no_import_goes_up_a_layer(graph: dict[str, set[str]]) -> None:
    upward = [
        f"{source} [{ig.LAYERS[ig.layer_of(source)][0]}]"
        f" -> {target} [{ig.LAYERS[ig.layer_of(target)][0]}]"
        for source, target in ig.upward_edges(graph)
    ]
    assert upward == []


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    found = [tuple(c) for c in ig.cycles(graph)]
    assert [c for c in found if c not in KNOWN_CYCLES] == []


def test_known_cycles_are_still_there(graph: dict[str, set[str]]) -> None:
    found = [tuple(c) for c in ig.cycles(graph)]
    assert [c for c in KNOWN_CYCLES if c not in found] == []


# The checker itself, on small graphs of its own.


def test_relative_and_function_level_imports_count(tmp_path: Path) -> None:
    pkg = tmp_path / "fhirserver"
    (pkg / "auth").mkdir(parents=True)
    (pkg / "storage").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "auth" / "__init__.py").write_text("")
    (pkg / "auth" / "consent.py").write_text("from .. import errors\n")
    (pkg / "storage" / "__init__.py").write_text("")
    (pkg / "storage" / "indexing.py").write_text(
        "def f():\n    from ..auth.consent import is_sensitive\n"
    )
    graph = ig.import_graph(pkg)
    assert graph["fhirserver.auth.consent"] == {"fhirserver.errors"}
    assert graph["fhirserver.storage.indexing"] == {"fhirserver.auth.consent"}
    assert ig.upward_edges(graph) == [("fhirserver.storage.indexing", "fhirserver.auth.consent")]


def test_a_package_import_names_the_submodule_or_the_package(tmp_path: Path) -> None:
    pkg = tmp_path / "fhirserver"
    (pkg / "api").mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '0'\n")
    (pkg / "api" / "__init__.py").write_text("from . import views\n")
    (pkg / "api" / "views.py").write_text("from .. import __version__\nimport fhirserver.api\n")
    graph = ig.import_graph(pkg)
    assert graph["fhirserver.api"] == {"fhirserver.api.views"}
    assert graph["fhirserver.api.views"] == {"fhirserver", "fhirserver.api"}
    assert ig.cycles(graph) == [["fhirserver.api", "fhirserver.api.views"]]


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert ig.cycles(graph) == [["a", "b", "c"]]
