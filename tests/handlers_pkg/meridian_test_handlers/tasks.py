"""Handlers that misbehave on purpose, and two that do not: each misdeed must
end in a clear failed attempt, and the agent must go on."""
import datetime
import os
import signal
import time

from meridian_client import Context, handler


@handler("ok")
def ok(payload: dict, ctx: Context) -> dict:
    return {"ok": True, "attempt": ctx.attempt}


@handler("checked", version="3.1", timeout=7, payload_schema={
    "type": "object", "required": ["n"], "properties": {"n": {"type": "integer", "minimum": 0}}})
def checked(payload: dict, ctx: Context) -> dict:
    return {"square": payload["n"] ** 2}


@handler("missing_dep")
def missing_dep(payload: dict, ctx: Context) -> dict:
    import meridian_no_such_module  # noqa: F401  (what a handler's missing dependency looks like)

    return {}


@handler("hang")
def hang(payload: dict, ctx: Context) -> dict:
    time.sleep(3600)
    return {}


@handler("hang_hard")
def hang_hard(payload: dict, ctx: Context) -> dict:
    """Swallows the soft time limit: only the hard limit ends it."""
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        try:
            time.sleep(3600)
        except BaseException:  # noqa: BLE001
            pass
    return {}


@handler("not_json")
def not_json(payload: dict, ctx: Context) -> dict:
    return {"when": datetime.datetime.now()}


@handler("suicide")
def suicide(payload: dict, ctx: Context) -> dict:
    os.kill(os.getpid(), signal.SIGKILL)
    return {}
