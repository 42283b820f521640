"""Which handler modules an agent loads, and how a start that cannot serve is
refused: from --handlers, the environment and the meridian.handlers entry
points; the built-ins when none is named."""
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from meridian_client import handler, registered

from agents.handlers import BUILTIN, HandlerLoadError, handler_modules, handlers_load
from tests.harness import ROOT

PKG = Path(__file__).resolve().parent.parent / "handlers_pkg"


@pytest.fixture
def user_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PKG))
    importlib.invalidate_caches()


def test_the_builtins_load_when_no_module_is_named():
    assert handler_modules() == [BUILTIN]
    assert {"echo", "sleep", "fail", "data_ingestion", "file_processing"} <= set(handlers_load([BUILTIN]))


def test_flag_then_environment_each_once_and_no_builtins():
    assert handler_modules(flag="a.b, c", environment="c,d.e") == ["a.b", "c", "d.e"]


def test_an_installed_distribution_declares_its_module_by_entry_point(user_path, monkeypatch):
    monkeypatch.syspath_prepend(str(PKG / "entry_points"))
    assert handler_modules() == ["meridian_test_handlers.tasks"]
    assert handler_modules(flag=BUILTIN) == [BUILTIN, "meridian_test_handlers.tasks"]
    assert {"ok", "checked", "suicide"} <= set(handlers_load(handler_modules()))


def test_an_import_error_names_the_module_and_the_cause(user_path):
    with pytest.raises(HandlerLoadError, match=r"'meridian_test_handlers.broken': ZeroDivisionError: division by zero"):
        handlers_load(["meridian_test_handlers.broken"])
    with pytest.raises(HandlerLoadError, match=r"'no_such_pkg.tasks': ModuleNotFoundError"):
        handlers_load(["no_such_pkg.tasks"])


def test_a_capability_claimed_by_two_functions_is_refused():
    @handler("twice_claimed")
    def first(payload, ctx):
        return {}

    with pytest.raises(ValueError, match="two handlers"):
        @handler("twice_claimed")
        def second(payload, ctx):
            return {}

    assert registered()["twice_claimed"].fn is first


@pytest.mark.parametrize("name, kwargs, problem", [
    ("Bad-Name", {}, "lower-case"),
    ("echo\n", {}, "lower-case"),
    ("fine", {"timeout": 0}, "timeout"),
    ("fine", {"payload_schema": {"type": 12}}, "not a valid JSON Schema"),
])
def test_a_bad_declaration_fails_where_it_is_written(name, kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        handler(name, **kwargs)


def run_agent(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(PKG), "DJANGO_SETTINGS_MODULE": "project.settings", "ROLE": "region",
           "REGION_ID": "t", "AGENT_REGISTRATION_TOKEN": "x", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "manage.py", "run_agent", "--region-url", "http://127.0.0.1:9", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_run_agent_refuses_to_start_on_an_import_error_with_exit_78():
    out = run_agent("--handlers", "meridian_test_handlers.broken")
    assert out.returncode == 78, out.stderr
    assert "could not import handler module 'meridian_test_handlers.broken': ZeroDivisionError" in out.stderr


def test_run_agent_refuses_a_capability_with_no_handler_naming_what_is_loaded():
    out = run_agent("--handlers", "meridian_test_handlers.tasks", "--capabilities", "ok,echo")
    assert out.returncode == 78, out.stderr
    assert "no handler for echo" in out.stderr and "agents.handlers.builtin" in out.stderr
    assert "checked, hang" in out.stderr  # what the module does register


def test_run_agent_refuses_a_url_that_can_never_work_at_once_with_exit_78():
    out = run_agent("--handlers", "meridian_test_handlers.tasks", "--region-url", "127.0.0.1:9")
    assert out.returncode == 78, out.stderr
    assert "region URL is not usable" in out.stderr and "127.0.0.1:9" in out.stderr
