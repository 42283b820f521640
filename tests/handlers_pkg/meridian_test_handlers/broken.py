"""A handler module whose import fails."""
from meridian_client import handler

RATIO = 1 / 0


@handler("never")
def never(payload, ctx):
    return {}
