"""The region -> router summary contract, in one home both sides import: the
router refuses a summary past these bounds (router/inputs.py), so the region
never sends one (regions/services/summary.py)."""
from __future__ import annotations

import re

# Capability names in one summary. A region with more offers the most useful
# ones (most idle agents, then most agents, then by name) and leaves the rest out.
MAX_CAPABILITIES = 1_000

# The region's "needs attention" items (regions/attention.py) in a summary: kind,
# severity, one line of text and a count each; never a task id or a payload.
# A region with more sends the first ones (critical first).
MAX_ATTENTION_ITEMS = 50
MAX_ATTENTION_KIND = 64
MAX_ATTENTION_TEXT = 300
MAX_ATTENTION_COUNT = 10 ** 9
ATTENTION_SEVERITIES = ("critical", "warning")
# An item may name the path of the list in the region's console that shows it;
# the router links it on the region's own address. Only a path under /admin/.
MAX_ATTENTION_PATH = 300
ATTENTION_PATH = re.compile(r"/admin/[A-Za-z0-9_./?=&%,:+\-]*")


def attention_path_ok(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_ATTENTION_PATH and bool(ATTENTION_PATH.fullmatch(value))
