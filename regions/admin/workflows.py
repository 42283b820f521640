"""Workflows: each with a diagram of its steps and their states (drawn on the
server, console/svg.py), and retry and cancel through the services."""
from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from console.formatting import COLOURS, badge, when
from console.svg import MUTED, flow
from regions.admin.base import ReadOnlyAdmin, act_on_each
from regions.admin.formatting import TASK_COLOURS, pretty_json, span, truncated
from regions.models import Task, Workflow
from regions.selectors import workflow_steps
from regions.services.tasks.actions import workflow_action_refusal, workflow_actions_allowed
from regions.services.workflows.cancel import workflow_cancel
from regions.services.workflows.retry import workflow_retry

WORKFLOW_COLOURS = {Workflow.Status.RUNNING: "blue", Workflow.Status.SUCCEEDED: "green",
                    Workflow.Status.FAILED: "red", Workflow.Status.CANCELLED: "grey"}


def steps_diagram(workflow: Workflow):
    columns = []
    for step in workflow_steps(workflow):
        columns.append([
            (task["capability"], COLOURS[TASK_COLOURS[task["status"]]] if task["status"] in TASK_COLOURS else MUTED,
             f"step {step['index']}" + (f" member {task['member']}" if step["kind"] == "group" else "")
             + f": {task['capability']}, {task['status']}" + (f" (task {task['task_id']})" if task["task_id"] else ""))
            for task in step["tasks"]])
    return flow(columns)


@admin.register(Workflow)
class WorkflowAdmin(ReadOnlyAdmin):
    list_display = ("short_id", "status_badge", "diagram", "submitted_by", "created", "duration", "error_short")
    list_filter = ("status",)
    search_fields = ("id", "idempotency_key", "error")
    fields = ("id", "status_badge", "error", "submitted_by", "idempotency_key", "created", "finished", "duration",
              "diagram", "step_tasks", "result_pretty")
    readonly_fields = fields
    actions = ["retry", "cancel"]
    change_form_template = "admin/regions/change_form_actions.html"
    console_actions = (("retry", "Retry"), ("cancel", "Cancel…"))  # "…": it asks first

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("submitted_by").prefetch_related("steps__tasks")

    @admin.display(description="workflow", ordering="id")
    def short_id(self, obj: Workflow):
        return format_html('<span title="{}">{}</span>', obj.id, str(obj.id)[:8])

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Workflow):
        return badge(obj.status, WORKFLOW_COLOURS.get(obj.status, "grey"), obj.error or obj.status)

    @admin.display(description="steps")
    def diagram(self, obj: Workflow):
        return steps_diagram(obj)

    @admin.display(description="tasks")
    def step_tasks(self, obj: Workflow):
        rows = [(step["index"], task["member"], task["capability"],
                 format_html('<a href="{}">{}</a>', reverse("admin:regions_task_change", args=[task["task_id"]]),
                             str(task["task_id"])[:8]) if task["task_id"] else "—", task["status"])
                for step in workflow_steps(obj) for task in step["tasks"]]
        return format_html("<table><tr><th>step</th><th>member</th><th>capability</th><th>task</th><th>status</th>"
                           "</tr>{}</table>",
                           format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                                            rows))

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Workflow):
        return when(obj.created_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, obj: Workflow):
        return when(obj.finished_at)

    @admin.display(description="duration")
    def duration(self, obj: Workflow):
        return span(obj.created_at, obj.finished_at)

    @admin.display(description="error")
    def error_short(self, obj: Workflow):
        return truncated(obj.error)

    @admin.display(description="result")
    def result_pretty(self, obj: Workflow):
        return pretty_json(obj.result)

    def actions_allowed(self, obj: Workflow) -> list[str]:
        return workflow_actions_allowed(obj)

    # Retry stays one click (it only starts finished work again); cancel asks first.
    @admin.action(description="Retry selected failed or cancelled workflows", permissions=["operate"])
    def retry(self, request, queryset):
        act_on_each(self, request, queryset, action="workflow.retry", noun="workflow", verb="retried",
                    service=lambda workflow: workflow_retry(workflow=workflow),
                    refusal=lambda workflow: workflow_action_refusal(workflow, "retry"),
                    only="only failed or cancelled ones can be.")

    @admin.action(description="Cancel selected workflows (and their active tasks)", permissions=["operate"])
    def cancel(self, request, queryset):
        return self.act_on_each(
            request, queryset, action="workflow.cancel", noun="workflow", verb="cancelled",
            service=lambda workflow: workflow_cancel(workflow=workflow),
            refusal=lambda workflow: workflow_action_refusal(workflow, "cancel"),
            confirm=lambda workflows: (f"Cancel {len(workflows)} workflow(s)?", [_cancel_line(w) for w in workflows],
                                       f"Yes, cancel {len(workflows)} workflow{'' if len(workflows) == 1 else 's'}"))


def _cancel_line(workflow: Workflow) -> str:
    """What workflow_cancel does: no step starts after it, and its active tasks are cancelled."""
    statuses = [task["status"] for step in workflow_steps(workflow) for task in step["tasks"]]
    active = sum(1 for status in statuses if status in Task.ACTIVE)
    running = statuses.count(Task.Status.RUNNING)
    return (f"workflow {str(workflow.id)[:8]}: no further step starts; its {active} active task(s) are cancelled"
            + (f" ({running} running, their agents told to stop them)" if running else ""))
