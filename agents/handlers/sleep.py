import time

from agents.handlers import Context, HandlerError, handler


@handler("sleep")
def sleep(payload: dict, ctx: Context) -> dict:
    seconds = payload.get("seconds", 1)
    if not isinstance(seconds, (int, float)) or not 0 <= seconds <= 3600:
        raise HandlerError("payload.seconds must be a number from 0 to 3600")
    time.sleep(seconds)
    return {"slept": seconds, "agent": ctx.agent_id, "attempt": ctx.attempt}
