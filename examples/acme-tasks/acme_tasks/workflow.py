"""A workflow from the client: the text statistics of several parts of a
document in parallel (a group of text_stats), then one step that joins them
(text_stats_merge receives the list of their results).

    python -m acme_tasks.workflow https://eu-west-3.example.com mk_... part1.txt part2.txt

Submit it to a region's URL (workflows are not forwarded by the router); the
region must run agents with these handlers (``run_agent --handlers
acme_tasks.tasks``)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from meridian_client import Client, WorkflowFailed

MAX_PARTS = 100  # the API's bound on a group


def report_steps(texts: list[str], *, top: int = 5) -> list[dict[str, Any]]:
    """The workflow's steps: a group of text_stats, one per text, then the join."""
    if not 1 <= len(texts) <= MAX_PARTS:
        raise ValueError(f"1 to {MAX_PARTS} texts, not {len(texts)}")
    return [
        {"group": [{"capability": "text_stats", "payload": {"text": text, "top": top}} for text in texts]},
        {"capability": "text_stats_merge", "payload": {"top": top}},
    ]


def report(client: Client, texts: list[str], *, timeout: float = 120) -> dict[str, Any]:
    workflow = client.workflow(report_steps(texts))
    return client.workflow_result(workflow, timeout=timeout)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    url, key, paths = argv[0], argv[1], argv[2:]
    with Client(url, key) as client:
        try:
            print(report(client, [Path(p).read_text() for p in paths]))
        except WorkflowFailed as exc:
            print(f"failed: {exc.workflow['error']}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
