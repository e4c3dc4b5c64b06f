"""Import graph of the project's own packages, read from the sources (module-level and
function-local imports alike), and the cycles in it.

    python scripts/import_graph.py            # prints the cycles; exit 1 if there is one
    python scripts/import_graph.py --edges    # prints every edge too

An edge A -> B means a statement in A imports B (`from P import name` points at P.name when that
is a module, else at P). Importing a package's submodule also runs the package's __init__; that
implicit edge is left out, as Python never re-enters a package that is being imported.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mfsa_pipe", "extractors", "models")


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py file of the project's packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imported_modules(tree: ast.AST, module: str, is_package: bool, files: dict[str, Path]) -> set[str]:
    """The project's modules a module's import statements load, anywhere in its body:
    `import P.m` loads P.m; `from P import x` loads P.x when that is a module, else P."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
    return found & files.keys()


def import_graph(root: Path = ROOT) -> nx.DiGraph:
    files = module_files(root)
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = imported_modules(tree, module, path.name == "__init__.py", files)
        graph.add_edges_from((module, target) for target in targets if target != module)
    return graph


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="print every edge")
    args = parser.parse_args()
    graph = import_graph()
    if args.edges:
        for a, b in sorted(graph.edges):
            print(f"{a} -> {b}")
    cycles = sorted(nx.simple_cycles(graph))
    print(f"{graph.number_of_nodes()} modules, {graph.number_of_edges()} import edges, {len(cycles)} cycles")
    for cycle in cycles:
        print("cycle:", " -> ".join(cycle + cycle[:1]))
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
