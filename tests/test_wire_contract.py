"""The agent <-> region contract is written once, in wire/.

The region routes every agent call from wire.endpoints and the agent formats
it from there; no product module outside wire/ spells an agent path, a queue
name or a contract task name itself. Modules are read with `ast`, never
imported: every string in the code counts (f-string pieces included), while
docstrings and comments, which may name a path for the reader, do not.
"""
from __future__ import annotations

import ast
import re

from django.urls import resolve

from tests.test_imports import ROOT, product_modules
from wire import endpoints, protocol

_CALLS = "heartbeat|claim|report|dead-letters|deregister"
CONTRACT_LITERAL = re.compile("|".join([
    r"api/v1/agents\b",  # any agent path, whole
    rf"agents/(register\b|(<[^>]*>|\{{[^}}]*\}})/({_CALLS})\b)",  # a route, Django's or a format string
    rf"^/({_CALLS})$",  # the tail of an f-string path
    r"^/?register_agent$",
    r"\bmeridian\.(cap|agent)\.",  # a queue name built by hand
    rf"^({re.escape(protocol.CONTROL_QUEUE)}|{re.escape(protocol.REPORTS_QUEUE)})$",
    rf"^({re.escape(protocol.EXECUTE_TASK)}|{re.escape(protocol.REPORT_TASK)})$",
    rf"^{re.escape(endpoints.AGENT_TOKEN_HEADER)}$",
    r"^HTTP_X_AGENT_TOKEN$",
]), re.IGNORECASE)


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def contract_literals() -> dict[str, list[tuple[int, str]]]:
    """module -> [(line, string)] for every contract literal outside wire/."""
    found: dict[str, list[tuple[int, str]]] = {}
    for module, path in product_modules().items():
        if module.split(".")[0] == "wire":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
                    and CONTRACT_LITERAL.search(node.value)):
                found.setdefault(module, []).append((node.lineno, node.col_offset, node.value))
    return {module: [(line, text) for line, _, text in sorted(hits)] for module, hits in found.items()}


def test_no_agent_path_queue_or_task_name_is_written_outside_wire():
    found = contract_literals()
    where = "\n".join(f"  {product_modules()[m].relative_to(ROOT)}:{line}: {text!r}"
                      for m, hits in sorted(found.items()) for line, text in hits)
    assert not found, ("the agent <-> region contract is written outside wire/ (use wire.endpoints, "
                       f"wire.protocol):\n{where}")


def test_the_scan_sees_paths_queues_and_task_names_but_not_docstrings(tmp_path, monkeypatch):
    package = tmp_path / "regions"
    package.mkdir()
    (package / "__init__.py").write_text('"""POST /api/v1/agents/<id>/heartbeat: described, not written."""\n')
    (package / "a.py").write_text(
        'def f(agent_id, cap):\n'
        '    return (f"/api/v1/agents/{agent_id}/claim", f"meridian.cap.{cap}", "agents.execute",\n'
        '            "agents/<agent_id:agent_id>/report", "agents/<agent_id:agent_id>/drain")\n')
    monkeypatch.setattr("tests.test_imports.PACKAGES", [(tmp_path, "regions")])
    assert contract_literals() == {"regions.a": [
        (2, "/api/v1/agents/"), (2, "/claim"), (2, "meridian.cap."), (2, "agents.execute"),
        (3, "agents/<agent_id:agent_id>/report"),
    ]}


def test_region_routes_every_agent_call_where_the_agent_sends_it():
    for endpoint in endpoints.AGENT_ENDPOINTS:
        assert resolve(endpoint.url(agent_id="agent-7")).url_name == endpoint.name
    assert resolve(endpoints.DISCOVER.url(), urlconf="tests.router_urls").url_name == endpoints.DISCOVER.name


def test_agent_paths_are_the_ones_agents_already_call():
    """Agents already deployed call these: the table may not move them."""
    assert [e.url(agent_id="a-1") for e in endpoints.AGENT_ENDPOINTS] == [
        "/api/v1/agents/a-1/heartbeat", "/api/v1/agents/register", "/api/v1/agents/a-1/claim",
        "/api/v1/agents/a-1/dead-letters", "/api/v1/agents/a-1/report", "/api/v1/agents/a-1/deregister",
    ]
    assert endpoints.DISCOVER.url() == "/register_agent"


def test_an_endpoint_matches_its_own_paths_only():
    assert endpoints.REPORT.matches("/api/v1/agents/a-1/report")
    assert not endpoints.REPORT.matches("/api/v1/agents/a/1/report")
    assert not endpoints.REPORT.matches("/api/v1/agents/a-1/report/x")
    assert not endpoints.REPORT.matches("/api/v1/agents/a-1/claim")
    assert endpoints.REGISTER.matches("/api/v1/agents/register")
