"""The region -> router summary contract, in one home both sides import: the
router refuses a summary past these bounds (router/inputs.py), so the region
never sends one (regions/services/summary.py)."""
from __future__ import annotations

# Capability names in one summary. A region with more offers the most useful
# ones (most idle agents, then most agents, then by name) and leaves the rest out.
MAX_CAPABILITIES = 1_000
