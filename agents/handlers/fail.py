from agents.handlers import Context, HandlerError, handler


@handler("fail")
def fail(payload: dict, ctx: Context) -> dict:
    """Fails on purpose: `until_attempt` N makes attempts below N fail, then succeed."""
    until = payload.get("until_attempt")
    if until is not None and ctx.attempt >= int(until):
        return {"recovered_on_attempt": ctx.attempt}
    message = str(payload.get("message", "failed on purpose"))
    if payload.get("permanent"):
        raise HandlerError(message)
    raise RuntimeError(message)
