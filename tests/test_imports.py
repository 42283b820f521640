"""No import cycles among product modules; project/ and wire/ stay below the apps.

Every product module (project/, wire/, regions/, agents/, router/, console/,
client/meridian_client/; migrations and tests left out) is read with `ast`,
never imported. Every import statement counts, top-level or inside a function:
a function-local import that hides a cycle is still a cycle. Relative imports
are resolved, and `from pkg import name` leads to pkg.name when name is a
submodule. Imports under `if TYPE_CHECKING:` never run and do not count. A
dotted string (include("regions.api.urls"), INSTALLED_APPS) is not an import.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (folder that holds the package, package name)
PACKAGES = [(ROOT, "project"), (ROOT, "wire"), (ROOT, "regions"), (ROOT, "agents"), (ROOT, "router"),
            (ROOT, "console"), (ROOT / "client", "meridian_client")]
SKIPPED_DIRS = {"migrations", "tests", "__pycache__"}
APPS = ("regions", "router", "agents", "console")


def product_modules() -> dict[str, Path]:
    """Dotted name -> file, for every product module."""
    modules = {}
    for base, package in PACKAGES:
        for path in sorted((base / package).rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            if SKIPPED_DIRS & set(parts[:-1]):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _type_checking_only(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom in the tree, at any depth, but not under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(node) and child in node.body:
                continue
            stack.append(child)


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The deepest product module that `import name` runs, or None outside the product."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported product module, line) for every import statement in `module`."""
    path = modules[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name, modules)
                if target:
                    found.append((target, node.lineno))
            continue
        if node.level:
            base = package.split(".")
            base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
            source = ".".join([*base, *([node.module] if node.module else [])])
        else:
            source = node.module or ""
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            target = submodule if submodule in modules else _known(source, modules)
            if target:
                found.append((target, node.lineno))
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: first line that imports it}."""
    modules = product_modules()
    graph: dict[str, dict[str, int]] = {}
    for module in modules:
        edges: dict[str, int] = {}
        for target, line in imports_of(module, modules):
            edges.setdefault(target, line)
        graph[module] = edges
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's components (iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
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
                    components.append(sorted(component))
    return components


def _shortest_cycle(start: str, members: set[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """start -> ... -> start inside one component (breadth first)."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child not in members:
                    continue
                if child == start:
                    chain = [node]
                    while chain[-1] != start:
                        chain.append(came_from[chain[-1]])
                    return [start, *reversed(chain[:-1]), start]
                if child not in came_from:
                    came_from[child] = node
                    following.append(child)
        frontier = following
    return [start]


def describe_cycle(chain: list[str], graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> str:
    steps = [chain[0]]
    for here, there in zip(chain, chain[1:]):
        where = modules[here].relative_to(ROOT)
        steps.append(f"  -> {there}   ({where}:{graph[here][there]})")
    return "\n".join(steps)


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One readable chain per component of more than one module, or per self-import."""
    found = []
    for component in strongly_connected(graph):
        members = set(component)
        if len(component) > 1 or component[0] in graph[component[0]]:
            found.append(_shortest_cycle(component[0], members, graph))
            if len(component) > 2:
                found[-1].append(f"(the whole cycle group: {', '.join(component)})")
    return found


def test_no_import_cycles():
    graph = import_graph()
    modules = product_modules()
    found = cycles(graph)
    report = []
    for chain in found:
        note = chain.pop() if chain[-1].startswith("(") else ""
        report.append(describe_cycle(chain, graph, modules) + (f"\n  {note}" if note else ""))
    assert not found, (f"{len(found)} import cycle(s) among product modules (move the shared piece to the module "
                       "that owns it, or to a lower module both import):\n\n" + "\n\n".join(report))


# project/ is the platform below the apps: settings, URLs, the Celery app, the
# WSGI/ASGI entry points and shared plumbing. It imports no app: Django names apps
# by dotted strings (INSTALLED_APPS, include("regions.api.urls"), and settings
# such as METRICS_COLLECTORS and WAIT_EVENTS that name what a role's app
# provides), which are not imports. A function-local import counts like any other.
def app_imports_of(package: str) -> list[tuple[str, str]]:
    """(module, app module) for every import of an app by a module of `package`."""
    return sorted((module, target) for module, edges in import_graph().items() if module.split(".")[0] == package
                  for target in edges if target.split(".")[0] in APPS)


def test_project_imports_no_app():
    found = app_imports_of("project")
    assert not found, ("project/ imports an app module (project/ sits below the apps; name the app by a "
                       f"dotted string where Django allows it, or move the code into the app): {found}")


# wire/ is the agent <-> region contract both sides import (regions and agents
# alike): it sits below every app.
def test_wire_imports_no_app():
    found = app_imports_of("wire")
    assert not found, ("wire/ imports an app module (both sides import the contract, so it can import neither: "
                       f"move what it needs into wire/, or pass it in): {found}")


def test_the_graph_sees_local_relative_and_submodule_imports(tmp_path, monkeypatch):
    """The checker itself: a cycle hidden by a function-local, relative
    `from . import name` import is found, and a TYPE_CHECKING import is not an edge."""
    package = tmp_path / "project"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from . import b\n")
    (package / "b.py").write_text("from project.a import f\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from project import a\n")
    monkeypatch.setitem(globals(), "PACKAGES", [(tmp_path, "project")])
    graph = import_graph()
    assert graph["project.a"] == {"project.b": 2}
    assert graph["project.b"] == {"project.a": 1}
    assert graph["project.c"] == {}
    assert cycles(graph) == [["project.a", "project.b", "project.a"]]
