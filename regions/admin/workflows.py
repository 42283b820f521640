"""Workflows: each with a diagram of its steps and their states (drawn on the
server, console/svg.py), and retry and cancel through the services."""
from __future__ import annotations

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from console.formatting import COLOURS, badge, when
from console.svg import MUTED, flow
from project.accounts.audit import audited
from project.exceptions import Refused
from regions.admin.base import ReadOnlyAdmin
from regions.admin.formatting import TASK_COLOURS, pretty_json, span, truncated
from regions.models import Workflow
from regions.selectors import workflow_steps
from regions.services.tasks.refusals import InvalidState
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
    console_actions = (("retry", "Retry"), ("cancel", "Cancel"))

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

    @admin.action(description="Retry selected failed or cancelled workflows", permissions=["operate"])
    def retry(self, request, queryset):
        done, refused, denied = 0, 0, []
        for workflow in queryset:
            try:
                with audited(request, "workflow.retry", target=str(workflow.id)):
                    workflow_retry(workflow=workflow)
                self.log_change(request, workflow, "retried")
                done += 1
            except InvalidState:
                refused += 1
            except Refused as exc:
                denied.append(f"{workflow.id}: {exc}")
        messages.info(request, f"{done} workflow(s) retried.")
        if refused:
            messages.warning(request, f"{refused} workflow(s) not retried: only failed or cancelled ones can be.")
        if denied:
            messages.error(request, "Not retried: " + "; ".join(denied[:10]))

    @admin.action(description="Cancel selected workflows (and their active tasks)", permissions=["operate"])
    def cancel(self, request, queryset):
        done = 0
        for workflow in queryset.filter(status=Workflow.Status.RUNNING):
            try:
                with audited(request, "workflow.cancel", target=str(workflow.id)):
                    workflow_cancel(workflow=workflow)
                self.log_change(request, workflow, "cancelled")
                done += 1
            except InvalidState:
                pass
        messages.info(request, f"{done} workflow(s) cancelled.")
