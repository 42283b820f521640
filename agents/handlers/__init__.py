"""Capability handlers, registered by name.

A handler takes the task's payload (a dict) and a Context and returns a
JSON-serialisable dict. Raise HandlerError for a failure that retrying cannot
fix (bad input); any other exception is retried while attempts remain.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

HANDLERS: dict[str, Callable] = {}
BUILTIN_MODULES = ("echo", "sleep", "fail", "data_ingestion", "file_processing")


class HandlerError(Exception):
    """The input is wrong: fail now, do not retry."""


@dataclass(frozen=True)
class Context:
    task_id: str
    attempt: int
    agent_id: str
    # Secret values the region resolved for this attempt (payload "auth_secret").
    secrets: dict = field(default_factory=dict, repr=False)

    def bearer(self, payload: dict) -> dict:
        name = payload.get("auth_secret")
        return {"Authorization": f"Bearer {self.secrets[name]}"} if name in self.secrets else {}


def handler(name: str):
    def register(fn: Callable) -> Callable:
        HANDLERS[name] = fn
        return fn

    return register


def load_builtin() -> dict[str, Callable]:
    for module in BUILTIN_MODULES:
        importlib.import_module(f"agents.handlers.{module}")
    return HANDLERS


def handler_get(name: str) -> Callable:
    load_builtin()
    try:
        return HANDLERS[name]
    except KeyError:
        raise HandlerError(f"this agent has no handler for capability {name!r}") from None
