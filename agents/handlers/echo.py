from agents.handlers import Context, handler


@handler("echo")
def echo(payload: dict, ctx: Context) -> dict:
    return {"echo": payload, "agent": ctx.agent_id, "attempt": ctx.attempt}
