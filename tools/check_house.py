"""The house rules a reviewer would otherwise check by eye.

``python -m tools.check_house [--root DIR]`` prints every breach and exits 1
if there is one:

- the one-way rule ``tools -> rcn -> datapath <- hdl_models``: ``datapath``
  imports none of the others, ``hdl_models`` only ``datapath``, ``rcn``
  neither ``tools`` nor ``hdl_models``; ``datapath`` and ``hdl_models`` import
  no Twisted;
- no module of ``rcn`` imports the global reactor when it is imported (an entry
  point may, inside the function that runs it);
- no import cycle between modules, nor between packages (``rcn.edge`` and
  ``rcn.mgmt`` importing each other is a cycle even when no two files do);
- no source file over 700 lines and no function over 80 lines outside
  ``tests/``.

Imports are read with :mod:`ast`, both at module top and inside functions
(a deferred import still couples the two), except those under
``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, NamedTuple, Set, Tuple

TOP_PACKAGES = ("tools", "rcn", "datapath", "hdl_models")

# What each top-level package may import among the others.
ALLOWED_TOP = {
    "tools": {"tools", "rcn", "datapath", "hdl_models"},
    "rcn": {"rcn", "datapath"},
    "datapath": {"datapath"},
    "hdl_models": {"hdl_models", "datapath"},
}

# Libraries a top-level package may not import at all.
FORBIDDEN_OUTSIDE = {"datapath": ("twisted",), "hdl_models": ("twisted",)}
GLOBAL_REACTOR = "twisted.internet.reactor"

MAX_FILE_LINES = 700
MAX_FUNCTION_LINES = 80


class Breach(NamedTuple):
    rule: str
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.where}: {self.detail}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(root: Path) -> Iterator[Path]:
    for top in TOP_PACKAGES:
        yield from sorted((root / top).rglob("*.py"))


def _type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
    return name == "TYPE_CHECKING"


def _walk_runtime(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not _type_checking_block(child):
                stack.append(child)


def _import_time_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """The nodes run when the module is imported: not inside a function body."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                stack.append(child)


def imported_names(nodes: Iterable[ast.AST]) -> Iterator[str]:
    """Absolute dotted names imported by ``nodes`` (relative imports are ours: left out)."""
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def imported_modules(tree: ast.AST, module: str, is_package: bool,
                     known: Set[str]) -> Set[str]:
    """The project modules ``module`` imports, resolved to known names."""
    found: Set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in _walk_runtime(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # "from rcn.nbd import protocol" imports the submodule; "from
            # rcn.nbd import Export" imports what the package's __init__ gives.
            names = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in known
                     else prefix for alias in node.names]
        else:
            continue
        for name in names:
            # "import twisted.x" is not ours; "rcn.edge.device.EdgeDevice" names
            # an attribute of a module: keep the longest known prefix.
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name.split(".")[0] in TOP_PACKAGES:
                found.add(name)
    found.discard(module)
    return found


class Source(NamedTuple):
    path: Path
    text: str
    tree: ast.AST


def read_sources(root: Path) -> Dict[str, Source]:
    """Every file of the checked packages, read and parsed once."""
    sources = {}
    for path in source_files(root):
        text = path.read_text()
        sources[module_name(root, path)] = Source(path, text, ast.parse(text, str(path)))
    return sources


def import_graph(sources: Dict[str, Source]) -> Tuple[Dict[str, Set[str]], Dict[str, Path]]:
    paths = {module: source.path for module, source in sources.items()}
    known = set(paths)
    graph = {module: imported_modules(source.tree, module, source.path.name == "__init__.py",
                                      known)
             for module, source in sources.items()}
    return graph, paths


def _package_of(module: str, paths: Dict[str, Path]) -> str:
    """The package a module belongs to (a package is its own)."""
    if paths[module].name == "__init__.py":
        return module
    return module.rpartition(".")[0] or module


def strongly_connected(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Tarjan's algorithm, iterative; components of more than one node."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    components = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
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
                        components.append(sorted(component))
    return components


def package_graph(graph: Dict[str, Set[str]],
                  paths: Dict[str, Path]) -> Dict[str, Set[str]]:
    """Package -> packages it imports from. A package's ``__init__`` re-exporting
    its own modules is not an edge; a module importing its parent package's
    ``__init__`` is not one either (it belongs to that package)."""
    packages: Dict[str, Set[str]] = {}
    for module, imports in graph.items():
        source = _package_of(module, paths)
        edges = packages.setdefault(source, set())
        for target in imports:
            target_package = _package_of(target, paths)
            if target_package == source:
                continue
            if source.startswith(target_package + "."):
                continue  # a subpackage using its parent's own modules
            if target_package.startswith(source + "."):
                continue  # a package using its own subpackage
            edges.add(target_package)
    return packages


def _cycle_path(graph: Dict[str, Set[str]], component: List[str]) -> str:
    """One concrete cycle through a component, for the message."""
    members = set(component)
    start = component[0]
    previous = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph.get(node, ())):
            if child == start:
                path = [node]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return " -> ".join(reversed(path)) + " -> " + start
            if child in members and child not in previous:
                previous[child] = node
                queue.append(child)
    return ", ".join(component)


def check_outside_imports(sources: Dict[str, Source]) -> Iterator[Breach]:
    for module in sorted(sources):
        top = module.split(".")[0]
        tree = sources[module].tree
        forbidden = FORBIDDEN_OUTSIDE.get(top, ())
        names = set(imported_names(_walk_runtime(tree)))
        for name in sorted(n for n in names if n.split(".")[0] in forbidden):
            yield Breach("one-way", module, f"imports {name}")
        if top == "rcn" and GLOBAL_REACTOR in imported_names(_import_time_nodes(tree)):
            yield Breach("global reactor", module, f"imports {GLOBAL_REACTOR} at import "
                         "time (take the reactor as an argument)")


def check_imports(sources: Dict[str, Source]) -> Iterator[Breach]:
    graph, paths = import_graph(sources)
    for module in sorted(graph):
        top = module.split(".")[0]
        for target in sorted(graph[module]):
            if target.split(".")[0] not in ALLOWED_TOP[top]:
                yield Breach("one-way", module, f"imports {target}")
    yield from check_outside_imports(sources)
    for component in strongly_connected(graph):
        yield Breach("module cycle", component[0], _cycle_path(graph, component))
    packages = package_graph(graph, paths)
    for component in strongly_connected(packages):
        yield Breach("package cycle", component[0],
                     _cycle_path(packages, component))


def _functions(tree: ast.AST) -> Iterable[ast.AST]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def check_sizes(root: Path, sources: Dict[str, Source]) -> Iterator[Breach]:
    for source in sources.values():
        where = str(source.path.relative_to(root))
        lines = source.text.count("\n")
        if lines > MAX_FILE_LINES:
            yield Breach("file size", where, f"{lines} lines > {MAX_FILE_LINES}")
        for function in _functions(source.tree):
            first = min([function.lineno] + [d.lineno for d in function.decorator_list])
            length = function.end_lineno - first + 1
            if length > MAX_FUNCTION_LINES:
                yield Breach("function size", f"{where}:{function.lineno}",
                             f"{function.name} is {length} lines > {MAX_FUNCTION_LINES}")


def breaches(root: Path) -> List[Breach]:
    sources = read_sources(root)
    return list(check_imports(sources)) + list(check_sizes(root, sources))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.check_house",
        description="Check the one-way import rule, import cycles between "
                    "modules and packages, and file and function sizes.")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="checkout to check (default: this one)")
    args = parser.parse_args(argv)
    found = breaches(args.root)
    for breach in found:
        print(breach)
    print(f"{len(found)} breaches", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
