"""Which operator actions apply to a task (and a workflow) in its state: one
rule, read by the console to offer its buttons and to refuse an action posted
anyway. The same conditions the services fence their updates on (task_cancel:
Task.ACTIVE; task_retry: RETRYABLE), so a page drawn before a change meanwhile
is still refused by the service."""
from __future__ import annotations

from regions.models import Task, Workflow
from regions.services.tasks.retry import RETRYABLE
from regions.services.workflows.retry import RETRYABLE as WORKFLOW_RETRYABLE

TASK_ACTIONS = ("retry", "cancel")


def _refusal(name: str, status: str, action: str, *, active, retryable, noun: str) -> str | None:
    if action == "cancel":
        return None if status in active else f"{name} is {status}: only {noun} can be cancelled"
    if action == "retry":
        return None if status in retryable else f"{name} is {status}: only a failed or cancelled {noun.split()[-1]} " \
                                                "can be retried"
    return f"unknown action {action}"


def task_action_refusal(task: Task, action: str) -> str | None:
    """None when `action` applies to `task` as it is, else why not."""
    return _refusal(f"task {str(task.id)[:8]}", task.status, action, active=Task.ACTIVE, retryable=RETRYABLE,
                    noun="an active task")


def task_actions_allowed(task: Task) -> list[str]:
    return [action for action in TASK_ACTIONS if task_action_refusal(task, action) is None]


def workflow_action_refusal(workflow: Workflow, action: str) -> str | None:
    return _refusal(f"workflow {str(workflow.id)[:8]}", workflow.status, action, active=(Workflow.Status.RUNNING,),
                    retryable=WORKFLOW_RETRYABLE, noun="a running workflow")


def workflow_actions_allowed(workflow: Workflow) -> list[str]:
    return [action for action in TASK_ACTIONS if workflow_action_refusal(workflow, action) is None]
