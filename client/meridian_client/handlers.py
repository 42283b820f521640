"""The public API for task code: one decorator, a context, one exception.

A handler is a plain function in your own package::

    from meridian_client import Context, HandlerError, handler

    @handler("thumbnail", version="1.2", timeout=120,
             payload_schema={"type": "object", "required": ["url"],
                             "properties": {"url": {"type": "string"}}})
    def thumbnail(payload: dict, ctx: Context) -> dict:
        if not payload["url"].startswith("https://"):
            raise HandlerError("url must be https")   # fails now, never retried
        return {"ok": True}                            # any JSON object

Start agents with it: ``manage.py run_agent --handlers mypkg.tasks`` (or
``AGENT_HANDLER_MODULES=mypkg.tasks``, or declare the module in your
distribution's ``meridian.handlers`` entry-point group). Any other exception is
retried while the task has attempts left. This module imports nothing but the
standard library, so your package and its tests need no Django and no Celery.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

__all__ = ["Context", "HandlerError", "HandlerSpec", "handler", "registered"]

NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")


class HandlerError(Exception):
    """The input is wrong: the attempt fails now and the task is not retried."""


@dataclass(frozen=True)
class Context:
    """What a handler knows about the attempt it runs."""

    task_id: str
    attempt: int
    agent_id: str
    # Secret values the region resolved for this attempt (payload "auth_secret").
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)

    def bearer(self, payload: Mapping[str, Any]) -> dict:
        """An Authorization header for the secret the payload names, if the region granted it."""
        name = payload.get("auth_secret")
        return {"Authorization": f"Bearer {self.secrets[name]}"} if name in self.secrets else {}


@dataclass(frozen=True)
class HandlerSpec:
    """A registered handler and what it declares about itself (sent to the
    region when the agent registers: the region refuses payloads that break the
    schema before anything is queued)."""

    name: str
    fn: Callable[[dict, Context], Any]
    module: str
    version: str = ""
    timeout: int | None = None
    payload_schema: dict | None = None

    def declaration(self) -> dict:
        out: dict[str, Any] = {"version": self.version}
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.payload_schema is not None:
            out["payload_schema"] = self.payload_schema
        return out


_REGISTRY: dict[str, HandlerSpec] = {}


def handler(name: str, *, version: str = "", timeout: int | None = None,
            payload_schema: dict | None = None) -> Callable[[Callable], Callable]:
    """Register `fn(payload, ctx) -> dict` as the handler of capability `name`.

    version: shown with the agent in the region; timeout: default seconds per
    attempt (the submission's `timeout` and the configuration win);
    payload_schema: a JSON Schema the region checks every submission against."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError(f"handler name {name!r}: lower-case letters, digits and _ (at most 64), "
                         "starting with a letter")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool)
                                or not 1 <= timeout <= 86_400):
        raise ValueError(f"handler {name!r}: timeout must be an integer number of seconds from 1 to 86400")
    if payload_schema is not None:
        _schema_check(name, payload_schema)

    def register(fn: Callable) -> Callable:
        if not callable(fn):
            raise TypeError(f"@handler({name!r}) decorates a function")
        previous = _REGISTRY.get(name)
        module = getattr(fn, "__module__", "?")
        if previous is not None and (previous.module, previous.fn.__qualname__) != (module, fn.__qualname__):
            raise ValueError(f"capability {name!r} has two handlers: {previous.module}.{previous.fn.__qualname__} "
                             f"and {module}.{fn.__qualname__}")
        _REGISTRY[name] = HandlerSpec(name=name, fn=fn, module=module, version=str(version)[:50],
                                      timeout=timeout, payload_schema=payload_schema)
        return fn

    return register


def _schema_check(name: str, schema: dict) -> None:
    if not isinstance(schema, dict):
        raise ValueError(f"handler {name!r}: payload_schema must be a JSON Schema object")
    try:  # checked where it is written when jsonschema is at hand (the agent always has it)
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError
    except ImportError:  # pragma: no cover - the region checks it again
        return
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"handler {name!r}: payload_schema is not a valid JSON Schema: {exc.message}") from None


def registered() -> dict[str, HandlerSpec]:
    """Every handler registered in this process so far, by capability."""
    return dict(_REGISTRY)
