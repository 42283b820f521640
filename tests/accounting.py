"""Count what agents' handlers did, from the lines they log, and judge a run:
every handler start and finish is logged with task id and attempt
(agents/tasks.py), so a run can be checked for double completions and for
starts of attempts that were no longer current. A finish is logged once the
outcome is in the agent's outbox (on its disk): a completion the platform has
been given, which must never be followed by another run of the task."""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

LINE = re.compile(r"handler (start|finish) task=([0-9a-f-]{36}) attempt=(\d+)")


@dataclass
class Ledger:
    starts: dict = field(default_factory=lambda: defaultdict(list))    # task -> [attempt, ...]
    finishes: dict = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def from_logs(cls, paths) -> "Ledger":
        ledger = cls()
        for path in paths:
            for event, task, attempt in LINE.findall(Path(path).read_text(errors="replace")):
                (ledger.starts if event == "start" else ledger.finishes)[task].append(int(attempt))
        return ledger

    def completed_twice(self) -> list[str]:
        return [t for t, attempts in self.finishes.items() if len(attempts) > 1]

    def stale_starts(self, final_attempts: dict[str, int]) -> list[str]:
        """A start is legitimate only for an attempt started once, and a task may
        start an earlier attempt again only if that attempt never finished (it
        was killed mid-run): so no attempt number twice, and nothing started
        after the task's final attempt."""
        bad = []
        for task, attempts in self.starts.items():
            if len(attempts) != len(set(attempts)) or max(attempts) > final_attempts.get(task, max(attempts)):
                bad.append(task)
                continue
            finished = set(self.finishes.get(task, []))
            if any(a in finished for a in attempts if a != max(attempts)):
                bad.append(task)  # an attempt that finished was followed by another start
        return bad


# Every fault scenario's figures, shown together at the end of the test run
# (conftest's terminal summary), so a CI log carries the whole matrix.
RECORDED: list[str] = []


def record(line: str) -> str:
    line = line.strip()
    RECORDED.append(line)
    print(line)
    return line


def figures(*, scenario: str, submitted: int, succeeded: int, completed_twice: int, stale: int,
            recovery: float | None = None, crashes: int = 0) -> str:
    lost = submitted - succeeded
    line = (f"FAULT {scenario}: submitted={submitted} succeeded={succeeded} lost={lost} "
            f"completed_twice={completed_twice} stale_starts={stale} crashes={crashes}")
    if recovery is not None:
        line += f" recovery_s={recovery:.1f}"
    return record(line)
