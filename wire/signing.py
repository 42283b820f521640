"""The signature on a report an agent sends over the broker (REPORT_TASK).

Keyed with the agent's report key (derived from its current token), so one
agent cannot report for another and a token rotated since is refused. The
body is hashed in its canonical JSON form: both sides sign the same bytes.
"""
from __future__ import annotations

import hashlib
import hmac
import json


def report_signature(*, key: str, kind: str, task_id: str, attempt: int, body: dict) -> str:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    msg = f"{kind}:{task_id}:{attempt}:{digest}".encode()
    return hmac.new(key.encode(), msg, hashlib.sha256).hexdigest()
