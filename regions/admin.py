"""The region's admin: a console over the services, never around them.

Every page is read-only (no add, no change, no delete): the system owns these
rows, and state changes only through actions that call the services (which also
tell the agent through Redis, revoke credentials, fence attempts and dispatch).
"""
from __future__ import annotations

import json
from datetime import datetime

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from console.formatting import COLOURS, age, badge, when
from regions.models import (Agent, ConfigVersion, DeadLetter, IngestedRecord, RegistrationToken, Task,
                            TaskAttempt)
from regions.services import liveness
from regions.services.agents.registry import NotFound, agent_set_desired, registration_token_create
from regions.services.tasks.cancel import task_cancel
from regions.services.tasks.refusals import CapabilityRefused, InvalidState, RateLimited
from regions.services.tasks.retry import task_retry


def span(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "—"
    seconds = (end - start).total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def pretty_json(value):
    """<pre> of the value as indented JSON; escaped (a payload is caller data)."""
    if value is None:
        return "—"
    return format_html('<pre style="margin:0;max-height:30em;overflow:auto;white-space:pre-wrap">{}</pre>',
                       json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


def truncated(text: str, limit: int = 80):
    if not text:
        return ""
    if len(text) <= limit:
        return text
    return format_html('<span title="{}">{}…</span>', text, text[:limit])


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewed, never edited here: what changes goes through an action. The
    actions named in `console_actions` are buttons on the object's page too."""

    console_actions: tuple[tuple[str, str], ...] = ()

    def has_operate_permission(self, request) -> bool:
        """Running an action (drain, revoke, retry, cancel) is changing the model:
        it needs the model's change permission, not only view (the form itself
        stays read-only for everyone)."""
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    def render_change_form(self, request, context, *args, **kwargs):
        if self.console_actions and self.has_operate_permission(request):
            context["console_actions"] = self.console_actions
            context["changelist_url"] = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
        return super().render_change_form(request, context, *args, **kwargs)

    def response_action(self, request, queryset):
        response = super().response_action(request, queryset)
        selected = request.POST.getlist(ACTION_CHECKBOX_NAME)
        if response is not None and request.POST.get("_from_detail") and len(selected) == 1:
            return HttpResponseRedirect(
                reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[selected[0]]))
        return response

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --- agents ---------------------------------------------------------------------

AGENT_STATES = {
    # state: (label, colour, what it means)
    "online_idle": ("online idle", "green", "heartbeating, takes tasks, none running"),
    "online_busy": ("online busy", "blue", "heartbeating, running tasks"),
    "cordoned": ("cordoned", "yellow", "takes no new tasks; keeps running what it has"),
    "draining": ("draining", "orange", "finishes its tasks, then stops"),
    "revoked": ("revoked", "grey", "credential withdrawn: told to stop, and stays stopped until re-admitted"),
    "offline": ("offline", "red", "missed its heartbeat TTL"),
    "stopped": ("stopped", "grey", "deregistered (stopped on request)"),
}


def agent_state(agent: Agent, running: int | None = None) -> str:
    # A revoked agent is stopped by its revocation (it cannot deregister without a
    # token, so its row goes offline): it reads as revoked, not as a lost agent.
    if agent.desired == Agent.Desired.STOPPED:
        return "revoked"
    if agent.status == Agent.Status.STOPPED:
        return "stopped"
    if agent.status == Agent.Status.OFFLINE:
        return "offline"
    if agent.desired == Agent.Desired.DRAINING:
        return "draining"
    if agent.desired == Agent.Desired.CORDONED:
        return "cordoned"
    return "online_busy" if agent.busy or running else "online_idle"


def _set_desired(desired: str, label: str, description: str):
    def action(modeladmin, request, queryset):
        done, failed = 0, []
        for agent_id in queryset.values_list("agent_id", flat=True):
            try:
                agent_set_desired(agent_id=agent_id, desired=desired)
                done += 1
            except (NotFound, liveness.RedisError) as exc:
                failed.append(f"{agent_id}: {exc}")
        messages.info(request, f"{done} agent(s) {label}.")
        if failed:
            messages.error(request, "Not changed: " + "; ".join(failed[:10]))

    action.short_description = description
    action.__name__ = f"agent_{label}"
    action.allowed_permissions = ("operate",)
    return action


def _running_count():
    return Coalesce(Subquery(
        Task.objects.filter(agent=OuterRef("agent_id"), status=Task.Status.RUNNING).order_by()
        .values("agent").annotate(n=Count("id")).values("n"), output_field=IntegerField()), 0)


@admin.register(Agent)
class AgentAdmin(ReadOnlyAdmin):
    list_display = ("agent_id", "state", "capabilities_list", "slots", "current_tasks", "last_seen_age", "version",
                    "credential", "kind")
    list_filter = ("status", "desired", "busy", "kind", "version")
    search_fields = ("agent_id", "hostname")
    fields = ("agent_id", "state", "status", "desired", "credential", "capabilities_list", "slots", "current_tasks",
              "version", "hostname", "kind", "last_seen_exact", "registered_at_exact", "offline_since_exact",
              "recent_tasks")
    readonly_fields = fields
    actions = [
        _set_desired(Agent.Desired.DRAINING, "drained", "Drain: finish current tasks, then stop"),
        _set_desired(Agent.Desired.CORDONED, "cordoned", "Cordon: take no new tasks"),
        _set_desired(Agent.Desired.ACTIVE, "uncordoned", "Uncordon: take tasks again (re-admits a revoked agent)"),
        _set_desired(Agent.Desired.STOPPED, "revoked", "Revoke: withdraw the credential and stop now"),
    ]
    change_form_template = "admin/regions/change_form_actions.html"
    console_actions = (("agent_drained", "Drain"), ("agent_cordoned", "Cordon"), ("agent_uncordoned", "Uncordon"),
                       ("agent_revoked", "Revoke"))
    RECENT_TASKS = 20

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(running=_running_count())

    @admin.display(description="state", ordering="status")
    def state(self, obj: Agent):
        label, colour, meaning = AGENT_STATES[agent_state(obj, getattr(obj, "running", None))]
        return badge(label, colour, meaning)

    @admin.display(description="capabilities")
    def capabilities_list(self, obj: Agent):
        return ", ".join(obj.capabilities)

    @admin.display(description="slots in use")
    def slots(self, obj: Agent):
        return f"{getattr(obj, 'running', 0)} / {obj.concurrency}"

    @admin.display(description="current tasks")
    def current_tasks(self, obj: Agent):
        if not getattr(obj, "running", 0):
            return "—"
        ids = Task.objects.filter(agent=obj.agent_id, status=Task.Status.RUNNING).values_list("id", flat=True)[:3]
        links = format_html_join(" ", '<a href="{}" title="{}">{}</a>',
                                 ((reverse("admin:regions_task_change", args=[i]), i, str(i)[:8]) for i in ids))
        more = obj.running - len(ids)
        return format_html("{}{}", links, f" +{more}" if more > 0 else "")

    @admin.display(description="last seen", ordering="last_seen")
    def last_seen_age(self, obj: Agent):
        return age(obj.last_seen)

    @admin.display(description="last seen")
    def last_seen_exact(self, obj: Agent):
        return format_html("{} ({})", when(obj.last_seen), age(obj.last_seen))

    @admin.display(description="registered at")
    def registered_at_exact(self, obj: Agent):
        return when(obj.registered_at)

    @admin.display(description="offline since")
    def offline_since_exact(self, obj: Agent):
        return when(obj.offline_since)

    @admin.display(description="credential")
    def credential(self, obj: Agent):
        if obj.token_hash:
            return badge("active", "green", "holds a token; its heartbeats and reports are accepted")
        return badge("revoked (no token)", "red", "no token: it must be re-admitted and register again")

    @admin.display(description="recent tasks")
    def recent_tasks(self, obj: Agent):
        """The attempts this agent ran, newest first (a task it lost to another
        agent is listed too, with how its attempt here ended)."""
        attempts = list(TaskAttempt.objects.filter(agent=obj.agent_id).select_related("task")
                        .only("number", "started_at", "finished_at", "outcome", "error", "task__id",
                              "task__capability", "task__status", "task__max_attempts")
                        .order_by("-started_at")[:self.RECENT_TASKS])
        if not attempts:
            return "none"
        rows = format_html_join(
            "", "<tr><td><a href='{}' title='{}'>{}</a></td><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td>"
                "<td>{}</td><td>{}</td></tr>",
            ((reverse("admin:regions_task_change", args=[a.task.id]), a.task.id, str(a.task.id)[:8],
              a.task.capability, a.number, a.task.max_attempts, _outcome_badge(a), when(a.started_at),
              span(a.started_at, a.finished_at), TASK_BADGES.get(a.task.status, a.task.status),
              truncated(a.error, 60)) for a in attempts))
        return format_html("<table><thead><tr><th>task</th><th>capability</th><th>attempt</th><th>outcome here</th>"
                           "<th>started</th><th>duration</th><th>task now</th><th>error</th></tr></thead>"
                           "<tbody>{}</tbody></table>", rows)


# --- tasks ----------------------------------------------------------------------

TASK_COLOURS = {
    Task.Status.WAITING: "yellow", Task.Status.QUEUED: "grey", Task.Status.RUNNING: "blue",
    Task.Status.RETRYING: "orange", Task.Status.SUCCEEDED: "green", Task.Status.FAILED: "red",
    Task.Status.CANCELLED: "grey",
}
TASK_BADGES = {status: badge(status, colour) for status, colour in TASK_COLOURS.items()}
OUTCOME_COLOURS = {
    TaskAttempt.Outcome.SUCCEEDED: "green", TaskAttempt.Outcome.FAILED: "red", TaskAttempt.Outcome.REQUEUED: "orange",
    TaskAttempt.Outcome.CANCELLED: "grey", TaskAttempt.Outcome.TIMED_OUT: "red",
}


def _outcome_badge(attempt: TaskAttempt):
    if not attempt.outcome:
        return badge("running", "blue")
    return badge(attempt.outcome.replace("_", " "), OUTCOME_COLOURS.get(attempt.outcome, "grey"))


class TaskAttemptInline(admin.TabularInline):
    model = TaskAttempt
    extra = 0
    can_delete = False
    fields = ("number", "agent", "started", "finished", "duration", "outcome_badge", "error")
    readonly_fields = fields
    ordering = ("number",)
    verbose_name_plural = "attempts"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="started")
    def started(self, obj: TaskAttempt):
        return when(obj.started_at)

    @admin.display(description="finished")
    def finished(self, obj: TaskAttempt):
        return when(obj.finished_at)

    @admin.display(description="duration")
    def duration(self, obj: TaskAttempt):
        return span(obj.started_at, obj.finished_at)

    @admin.display(description="outcome")
    def outcome_badge(self, obj: TaskAttempt):
        return _outcome_badge(obj)


@admin.register(Task)
class TaskAdmin(ReadOnlyAdmin):
    list_display = ("short_id", "capability", "status_badge", "attempts", "agent_link", "queue_wait", "duration",
                    "created", "error_short")
    list_filter = ("status", "capability")
    search_fields = ("id", "idempotency_key", "agent", "error")
    fields = ("id", "capability", "status_badge", "status_reason", "attempts", "agent", "target_agent", "priority",
              "timeout", "submitted_by", "idempotency_key", "created", "started", "finished", "queue_wait",
              "duration", "error", "payload_pretty", "result_pretty")
    readonly_fields = fields
    inlines = [TaskAttemptInline]
    actions = ["retry", "cancel"]
    change_form_template = "admin/regions/change_form_actions.html"
    console_actions = (("retry", "Retry"), ("cancel", "Cancel"))

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        # A page of 100 rows must not load 100 results of up to 8 MiB each: the
        # list never shows them; the task's own page does.
        return qs if request.resolver_match and request.resolver_match.url_name.endswith("_change") else \
            qs.defer("payload", "result")

    @admin.display(description="task", ordering="id")
    def short_id(self, obj: Task):
        return format_html('<span title="{}">{}</span>', obj.id, str(obj.id)[:8])

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Task):
        return badge(obj.status, TASK_COLOURS.get(obj.status, "grey"), obj.status_reason or obj.status)

    @admin.display(description="attempt")
    def attempts(self, obj: Task):
        return f"{obj.attempt}/{obj.max_attempts}"

    @admin.display(description="queue wait")
    def queue_wait(self, obj: Task):
        return span(obj.created_at, obj.started_at)

    @admin.display(description="duration (region)")
    def duration(self, obj: Task):
        return span(obj.started_at, obj.finished_at)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Task):
        return when(obj.created_at)

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: Task):
        return when(obj.started_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, obj: Task):
        return when(obj.finished_at)

    @admin.display(description="agent", ordering="agent")
    def agent_link(self, obj: Task):
        if not obj.agent:
            return "—"
        return format_html('<a href="{}?q={}">{}</a>', reverse("admin:regions_agent_changelist"), obj.agent, obj.agent)

    @admin.display(description="error (or why it waits)")
    def error_short(self, obj: Task):
        if obj.error:
            return truncated(obj.error)
        if obj.status_reason and obj.status in Task.PENDING:
            return format_html('<span style="color:{}">{}</span>', COLOURS["grey"], truncated(obj.status_reason))
        return ""

    @admin.display(description="payload")
    def payload_pretty(self, obj: Task):
        return pretty_json(obj.payload)

    @admin.display(description="result")
    def result_pretty(self, obj: Task):
        return pretty_json(obj.result)

    @admin.action(description="Retry selected failed or cancelled tasks (a new attempt)", permissions=["operate"])
    def retry(self, request, queryset):
        done, refused, denied = 0, 0, []
        for task in queryset.defer("payload", "result"):
            try:
                task_retry(task=task)
                done += 1
            except InvalidState:
                refused += 1
            except (CapabilityRefused, RateLimited) as exc:
                denied.append(f"{task.id}: {exc}")
        messages.info(request, f"{done} task(s) retried.")
        if refused:
            messages.warning(request, f"{refused} task(s) not retried: only failed or cancelled tasks can be.")
        if denied:
            messages.error(request, "Not retried: " + "; ".join(denied[:10]))

    @admin.action(description="Cancel selected tasks", permissions=["operate"])
    def cancel(self, request, queryset):
        done = 0
        for task in queryset.filter(status__in=Task.ACTIVE).defer("payload", "result"):
            try:
                task_cancel(task=task)
                done += 1
            except InvalidState:
                pass
        messages.info(request, f"{done} task(s) cancelled.")


# --- configuration -----------------------------------------------------------------

@admin.register(ConfigVersion)
class ConfigVersionAdmin(ReadOnlyAdmin):
    """Every commit the region tried to apply, and why one was rejected."""

    list_display = ("short_sha", "subject", "applied_at", "result_badge", "duration", "changes_count", "reason")
    list_filter = ("result", "is_active")
    search_fields = ("sha", "subject", "error")
    fields = ("sha", "subject", "ref", "repo", "applied_at", "result_badge", "is_active", "duration", "reason",
              "changes_pretty", "content_pretty")
    readonly_fields = fields

    @admin.display(description="sha", ordering="sha")
    def short_sha(self, obj: ConfigVersion):
        return format_html('<span title="{}"><code>{}</code></span>', obj.sha, obj.sha[:12])

    @admin.display(description="applied at", ordering="created_at")
    def applied_at(self, obj: ConfigVersion):
        return when(obj.created_at)

    @admin.display(description="result", ordering="result")
    def result_badge(self, obj: ConfigVersion):
        if obj.result == ConfigVersion.Result.APPLIED:
            return badge("active" if obj.is_active else "applied", "green" if obj.is_active else "grey")
        return badge("rejected", "red", obj.error)

    @admin.display(description="duration", ordering="duration_ms")
    def duration(self, obj: ConfigVersion):
        return f"{obj.duration_ms} ms"

    @admin.display(description="changes")
    def changes_count(self, obj: ConfigVersion):
        return len(obj.changes or [])

    @admin.display(description="rejection reason (file: key: problem)")
    def reason(self, obj: ConfigVersion):
        return format_html('<span style="color:{}">{}</span>', COLOURS["red"], obj.error) if obj.error else ""

    @admin.display(description="changes")
    def changes_pretty(self, obj: ConfigVersion):
        return pretty_json(obj.changes)

    @admin.display(description="content (secrets as references only)")
    def content_pretty(self, obj: ConfigVersion):
        return pretty_json(obj.content)


# --- the rest -------------------------------------------------------------------------

@admin.register(RegistrationToken)
class RegistrationTokenAdmin(admin.ModelAdmin):
    """Added through the service (a token is generated, only its digest kept) and
    shown once; a row added with a form alone would hold no token at all."""

    list_display = ("name", "prefix", "created_at", "revoked_at")
    readonly_fields = ("prefix", "token_hash", "created_at")

    def get_fields(self, request, obj=None):
        return ["name"] if obj is None else ["name", "prefix", "created_at", "revoked_at"]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        token, raw = registration_token_create(name=form.cleaned_data["name"])
        obj.pk, obj.prefix, obj.token_hash, obj.created_at = token.pk, token.prefix, token.token_hash, token.created_at
        obj._state.adding, obj._state.db = False, token._state.db
        request._meridian_tokens = [(obj.name, raw)]

    def response_add(self, request, obj, post_url_continue=None):
        response = TemplateResponse(request, "admin/token_once.html", {
            **self.admin_site.each_context(request), "title": f"Registration token {obj.name} added",
            "what": "agent registration token", "tokens": getattr(request, "_meridian_tokens", []),
            "hint": "Agents trade it for a credential of their own: manage.py run_agent --registration-token … "
                    "(or AGENT_REGISTRATION_TOKEN in their environment).",
            "back": reverse("admin:regions_registrationtoken_changelist"), "opts": self.model._meta,
        })
        response["Cache-Control"] = "no-store"
        return response


@admin.register(IngestedRecord)
class IngestedRecordAdmin(admin.ModelAdmin):
    list_display = ("task", "line")
    raw_id_fields = ("task",)


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    """Read-only: what the region's consumers dropped, and why."""

    list_display = ("received_at", "source", "queue", "task_name", "task_id", "reason")
    list_filter = ("source", "queue", "task_name")
    search_fields = ("task_id", "reason", "source")
    date_hierarchy = "received_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
