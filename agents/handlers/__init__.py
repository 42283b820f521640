"""Handlers on the agent: which modules are loaded, and the one registry they fill.

Task code is written against the public API in ``meridian_client.handlers``
(``@handler``, ``Context``, ``HandlerError``), re-exported here for the built-in
handlers. An agent loads, in this order:

1. the modules named by ``run_agent --handlers a.b,c.d``;
2. the modules in ``AGENT_HANDLER_MODULES`` (comma-separated, the environment);
3. the modules every installed distribution declares in the entry-point group
   ``meridian.handlers`` (``acme = "acme_tasks.tasks"``): no flag needed;

and the built-ins (``agents.handlers.builtin``: echo, sleep, fail,
data_ingestion, file_processing) when none of these names anything, or when
named like any other module.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from meridian_client.handlers import Context, HandlerError, HandlerSpec, handler, registered

__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "Context", "HandlerError", "HandlerLoadError", "HandlerSpec",
           "handler", "handler_get", "handler_modules", "handlers_load"]

BUILTIN = "agents.handlers.builtin"
ENTRY_POINT_GROUP = "meridian.handlers"


class HandlerLoadError(Exception):
    """A handler module named to the agent could not be imported."""


def handler_modules(*, flag: str | None = None, environment: str | None = None) -> list[str]:
    """The modules to load, in order, each once (see the module docstring)."""
    named = _split(flag) + _split(environment) + [ep.module for ep in entry_points(group=ENTRY_POINT_GROUP)]
    return list(dict.fromkeys(named or [BUILTIN]))


def _split(value: str | None) -> list[str]:
    return [m.strip() for m in (value or "").split(",") if m.strip()]


def handlers_load(modules: list[str]) -> dict[str, HandlerSpec]:
    """Import the modules; returns the handlers they registered (and any earlier ones)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # an ImportError, or whatever the module's own code raised
            raise HandlerLoadError(f"could not import handler module {module!r}: "
                                   f"{type(exc).__name__}: {exc}") from exc
    return registered()


def handler_get(name: str) -> HandlerSpec:
    """The handler of a capability in this process (run_agent loaded the modules
    before the worker forked its pool)."""
    handlers = registered() or handlers_load([BUILTIN])
    try:
        return handlers[name]
    except KeyError:
        raise HandlerError(f"this agent has no handler for capability {name!r}") from None
