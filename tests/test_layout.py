"""The layout of ``zoo/`` stays what DEVELOPERS.md says it is.

- The layers hold: a package imports only the packages below it (the import-linter contracts in
  ``pyproject.toml``, checked here by ``lint-imports`` itself and by a direct walk of the import graph).
- No import circles between files.
- Imports sit at module top, where a reader (and a tool) sees them. A function-level import only for a
  heavy optional library kept out of ``import zoo`` (matplotlib, pycocoevalcap, selenium, TensorBoard),
  with a comment saying so; never a ``zoo`` module, never to dodge a circle.

Each checker is also run on a graph or a source with the fault put in, so that none of them can pass by
looking at nothing.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: import-linter brings tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
#: the only libraries a function body may import, each for a reason given on that line
LAZY = ("matplotlib", "pycocoevalcap", "selenium", "torch.utils.tensorboard")


# -- the checkers ---------------------------------------------------------------------------------------
def layers() -> list[set[str]]:
    """The layered contract of pyproject.toml, top first: each layer a set of packages."""
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [{p.strip() for p in layer.split("|")} for layer in contract["layers"]]


def build_graph() -> grimp.ImportGraph:
    return grimp.build_graph("zoo", exclude_type_checking_imports=True, cache_dir=None)


def _package(module: str, packages: set[str]) -> str | None:
    return next((p for p in packages if module == p or module.startswith(p + ".")), None)


def upward_imports(graph: grimp.ImportGraph, order: list[set[str]]) -> list[str]:
    """``importer -> imported`` for every import of a package from a layer above the importer's, or of a
    sibling package in the same layer (siblings are independent)."""
    rank = {p: i for i, layer in enumerate(order) for p in layer}  # 0 = top
    packages = set(rank)
    wrong = []
    for importer in sorted(graph.modules):
        a = _package(importer, packages)
        if a is None:
            continue
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            b = _package(imported, packages)
            if b is None or a == b:
                continue
            if rank[b] <= rank[a]:  # above, or a sibling in the same layer
                wrong.append(f"{importer} -> {imported}")
    return wrong


def import_circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return circles


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while (node := parents.get(node)) is not None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _probes_optional(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside ``try: ... except ImportError`` (or ModuleNotFoundError): an optional package probed."""
    parent = parents.get(node)
    if not isinstance(parent, ast.Try) or node not in parent.body:
        return False
    caught = " ".join(ast.unparse(h.type) for h in parent.handlers if h.type is not None)
    return "ImportError" in caught or "ModuleNotFoundError" in caught


def hidden_imports(source: str, name: str) -> list[str]:
    """Imports inside function bodies that are not a commented import of a LAZY library. Imports under
    ``if TYPE_CHECKING:`` and in ``try: ... except ImportError`` (an optional package probed) are not
    counted."""
    tree = ast.parse(source)
    lines = source.splitlines()
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    wrong = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.col_offset == 0:
            continue
        if _in_type_checking(node, parents) or _probes_optional(node, parents):
            continue
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        lazy = all(any(m == lib or m.startswith(lib + ".") for lib in LAZY) for m in modules)
        commented = "#" in lines[node.lineno - 1] or lines[node.lineno - 2].strip().startswith("#")
        if not (lazy and commented):
            fix = "say why it is lazy in a comment on that line" if lazy else "move it to the module top"
            wrong.append(f"{name}:{node.lineno}: `{ast.unparse(node)}`: {fix}")
    return wrong


# -- the tree -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return build_graph()


def test_lint_imports_keeps_every_contract():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--config", str(PYPROJECT), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "broken" not in proc.stdout.lower().replace("0 broken", "")


def test_every_package_of_zoo_is_in_a_layer(graph):
    packages = {m for m in graph.modules if m.count(".") == 1 and graph.find_children(m)}
    placed = set().union(*layers())
    assert packages - placed == set(), "add the new package to the layers in pyproject.toml and DEVELOPERS.md"
    assert placed <= packages


def test_no_package_imports_a_package_above_it(graph):
    assert upward_imports(graph, layers()) == []
    # the walk sees real imports: training uses evaluation (validation), evaluation never training
    assert graph.chain_exists(importer="zoo.training", imported="zoo.evaluation", as_packages=True)
    assert not graph.chain_exists(importer="zoo.evaluation", imported="zoo.training", as_packages=True)


def test_no_import_circles_between_files(graph):
    assert import_circles(graph) == []


def test_imports_sit_at_module_top():
    wrong = []
    for folder in ("zoo", "plugins"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            wrong += hidden_imports(path.read_text(), str(path.relative_to(ROOT)))
    assert wrong == [], "\n".join(wrong)


# -- the checkers find what they are for ----------------------------------------------------------------
def test_the_checkers_find_an_upward_import_and_a_circle():
    g = build_graph()
    g.add_import(importer="zoo.contracts.decoder", imported="zoo.training.runs")
    assert upward_imports(g, layers()) == ["zoo.contracts.decoder -> zoo.training.runs"]
    g.add_import(importer="zoo.files", imported="zoo.errors")
    g.add_import(importer="zoo.errors", imported="zoo.files")
    assert ["zoo.errors", "zoo.files"] in import_circles(g)
    g2 = build_graph()
    g2.add_import(importer="zoo.data.datasets", imported="zoo.generation.beam")  # siblings: independent
    assert upward_imports(g2, layers()) == ["zoo.data.datasets -> zoo.generation.beam"]


def test_the_scan_finds_hidden_imports():
    source = '''
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from zoo.training.runs import RunSpec
def f():
    from zoo.errors import ZooError
    import json
    from matplotlib.figure import Figure  # lazy: matplotlib costs ~0.3 s
    from matplotlib import colormaps
    try:
        import tensorboard
    except ImportError:
        pass
    try:
        from tqdm import tqdm
    finally:
        pass
'''
    wrong = hidden_imports(source, "x.py")
    assert [w.split(":")[1] for w in wrong] == ["6", "7", "9", "15"], wrong
