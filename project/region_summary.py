"""The region -> router summary contract, in one home both sides import: the
router refuses a summary past these bounds (router/inputs.py), so the region
never sends one (regions/services/summary.py)."""
from __future__ import annotations

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
