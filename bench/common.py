"""What every benchmark prints last: one comparable summary line.

    BENCH <name> <value> <unit> ref=<reference> ratio=<value/reference> target=<target> <ok|short>

`ref` is the reference measured side by side in the same run (or the fixed
bound the target is stated against); `target` is what the product promises,
written as the comparison it must pass (`>=0.5x`, `<5ms`, ...).
"""
from __future__ import annotations

import statistics

from wire.endpoints import HEARTBEAT

# The heartbeat's path on either side of an agent's id: `path` and `suffix` below.
HEARTBEAT_PATH, HEARTBEAT_SUFFIX = HEARTBEAT.url(agent_id="\0").split("\0")

# wrk's Lua for many agents: `tokens` is a JSON list of [agent_id, token]; each
# request is the next agent's POST to path .. id .. suffix (a heartbeat body).
# A %-template: the caller fills tokens, path and suffix and may append more Lua.
WRK_AGENTS_LUA = """
local agents = {}
local f = io.open("%(tokens)s")
local raw = f:read("*a")
f:close()
for id, tok in raw:gmatch('%%["([^"]+)", "([^"]+)"%%]') do
  table.insert(agents, {id, tok})
end
local n = #agents
local i = 0
request = function()
  i = i + 1
  local a = agents[(i %% n) + 1]
  return wrk.format("POST", "%(path)s" .. a[1] .. "%(suffix)s",
    {["Authorization"] = "Bearer " .. a[2], ["Content-Type"] = "application/json"}, '{"busy": 0}')
end
"""


def percentile(values, p: float) -> float:
    """The p-th percentile (0-100) by nearest rank; NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(round(p / 100 * len(ordered) + 0.5))))
    return ordered[rank - 1]


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "nan"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


def bench_line(name: str, value: float, unit: str, *, ref: float, target: str, ok: bool) -> str:
    """Print (and return) the summary line; ratio = value / ref."""
    ratio = value / ref if ref else float("nan")
    line = (f"BENCH {name} {_fmt(value)} {unit} ref={_fmt(ref)} ratio={_fmt(ratio)} target={target} "
            f"{'ok' if ok else 'short'}")
    print(line, flush=True)
    return line
