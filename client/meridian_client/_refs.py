"""Task references and what a task's state says: ``<region_id>/<uuid>``, the
region's URL out of a task's, whether a task is final and its outcome."""
from __future__ import annotations

import uuid
from typing import Any, Mapping, Protocol

from meridian_client.errors import TaskCancelled, TaskFailed

FINAL = frozenset({"succeeded", "failed", "cancelled"})
TASKS_PATH = "/api/v1/tasks"


def parse_ref(text: str) -> tuple[str | None, str]:
    """``"<region_id>/<uuid>"`` or a bare ``"<uuid>"`` -> (region_id or None, uuid)."""
    if not isinstance(text, str):
        raise ValueError(f"a task reference is a string, not {type(text).__name__}")
    region, _, task_id = text.strip().rpartition("/")
    try:
        task_id = str(uuid.UUID(task_id))
    except ValueError:
        raise ValueError(f"{text!r} is not a task reference (<region_id>/<task uuid>, or the uuid alone)") from None
    if region and not all(c.isalnum() or c in "-_" for c in region) or len(region) > 64:
        raise ValueError(f"{text!r}: {region!r} is not a region id")
    return (region or None), task_id


def region_url_from_task_url(task_url: Any) -> str | None:
    """The region's base URL out of a task's ``url`` (…/api/v1/tasks/<id>)."""
    if isinstance(task_url, str) and TASKS_PATH + "/" in task_url:
        return task_url.rsplit(TASKS_PATH + "/", 1)[0]
    return None


def final(task: Mapping[str, Any] | None) -> bool:
    """True for a task in a final state (succeeded, failed, cancelled)."""
    if not task:
        return False
    return task.get("status") in FINAL


def task_outcome(task: Mapping[str, Any]) -> Any:
    """The result of a final task, or its failure as an exception."""
    status = task.get("status")
    if status == "succeeded":
        return task.get("result")
    if status == "cancelled":
        raise TaskCancelled(f"task {task.get('id')} was cancelled", task=task)
    error = task.get("error") or task.get("status_reason") or "failed"
    raise TaskFailed(f"task {task.get('id')} failed after {task.get('attempt')} attempt(s): {error}", task=task)


class RefState(Protocol):
    """What the core reads and updates of a task reference."""

    task_id: str
    region_id: str | None
    region_url: str | None
    task: dict[str, Any] | None
