"""Refusals as the server sends them: a region's, relayed by the router, and a
batch item's, turned into the exception a single submission would have raised."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from meridian_client.errors import APIError, error_from_answer


def error_body(body: Any) -> Any:
    """A region's refusal passed back by the router sits under "task" (or "batch")."""
    if isinstance(body, dict) and "error" not in body and "regional_orchestrator_url" in body:
        for key in ("task", "batch"):
            if isinstance(body.get(key), dict):
                # ... with the region it came from (a retry goes there only).
                return {**body[key], "region_id": body.get("region_id"),
                        "regional_orchestrator_url": body.get("regional_orchestrator_url")}
    return body


@dataclass(frozen=True)
class Refusal:
    """A batch item the region refused: its ``index`` in the batch, the HTTP
    ``status`` it would have had alone, the ``error`` code and ``detail``."""

    index: int
    status: int
    error: str
    detail: Any

    def exception(self) -> APIError:
        """The exception a single submission would have raised."""
        detail = self.detail if isinstance(self.detail, str) else json.dumps(self.detail)
        body = {"error": self.error, "detail": detail}
        if not isinstance(self.detail, str):
            body["fields"] = self.detail
        return error_from_answer(self.status, body)
