"""Agents: their state at a glance, and drain, cordon, uncordon and revoke."""
from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from console.formatting import age, badge, when
from regions.admin.base import ReadOnlyAdmin
from regions.admin.filters import AgentStateFilter
from regions.admin.formatting import TASK_BADGES, attempt_outcome_badge, span, truncated
from regions.models import Agent, Task, TaskAttempt
from regions.services.agents.actions import agent_action_refusal, agent_actions_allowed
from regions.services.agents.registry import agent_set_desired


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


def _running_text(count: int) -> str:
    return "no task" if not count else "1 task" if count == 1 else f"{count} tasks"


def _drain_line(agent: Agent) -> str:
    running = getattr(agent, "running", 0)
    if not running:
        return f"agent {agent.agent_id} is running no task; drain stops it at its next heartbeat"
    return (f"agent {agent.agent_id} is running {_running_text(running)}; drain lets them finish, then stops it "
            "(it takes no new task meanwhile)")


def _revoke_line(agent: Agent) -> str:
    # What agent_set_desired(STOPPED) does: the token goes at once (the agent's
    # next heartbeat is refused and it stops; its reports no longer verify), and
    # its running tasks are requeued by the reaper once the agent is silent
    # (_reap_orphans), since nothing it reports about them is accepted.
    running = getattr(agent, "running", 0)
    line = (f"revoke withdraws {agent.agent_id}'s credential now: it stops at its next heartbeat and must be "
            "re-admitted (Uncordon) to register again")
    if running:
        line += (f"; its {running} running {'task is' if running == 1 else 'tasks are'} requeued (a new attempt "
                 "elsewhere, or failed when none is left) once the reaper finds it silent: nothing it reports "
                 "about them is accepted any more")
    return line


# Drain and revoke ask first (what they do cannot be taken back: a drained agent
# exits, a revoked one loses its credential). Cordon and uncordon stay one click:
# they only say whether the agent takes new tasks, nothing running is touched, and
# each undoes the other.
AGENT_ACTIONS = {
    # verb: (desired, past tense, menu description, confirmation line or None)
    "drain": (Agent.Desired.DRAINING, "drained", "Drain: finish current tasks, then stop", _drain_line),
    "cordon": (Agent.Desired.CORDONED, "cordoned", "Cordon: take no new tasks", None),
    "uncordon": (Agent.Desired.ACTIVE, "uncordoned", "Uncordon: take tasks again (re-admits a revoked agent)", None),
    "revoke": (Agent.Desired.STOPPED, "revoked", "Revoke: withdraw the credential and stop now", _revoke_line),
}


def _set_desired(verb: str):
    desired, label, description, line = AGENT_ACTIONS[verb]

    def action(modeladmin, request, queryset):
        return modeladmin.act_on_each(
            request, queryset, action=f"agent.{verb}", noun="agent", verb=label,
            service=lambda agent: agent_set_desired(agent_id=agent.agent_id, desired=desired),
            logged=lambda agent: f"{label} (desired: {desired})",
            refusal=lambda agent: agent_action_refusal(agent, verb), target=lambda agent: agent.agent_id,
            confirm=None if line is None else lambda agents: (
                f"{verb.capitalize()} {len(agents)} agent(s)?", [line(agent) for agent in agents],
                f"Yes, {verb} {len(agents)} agent{'' if len(agents) == 1 else 's'}"))

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
    list_filter = (AgentStateFilter, "status", "desired", "busy", "kind", "version")
    search_fields = ("agent_id", "hostname")
    fields = ("agent_id", "state", "status", "desired", "credential", "capabilities_list", "slots", "current_tasks",
              "version", "hostname", "kind", "last_seen_exact", "registered_at_exact", "offline_since_exact",
              "recent_tasks")
    readonly_fields = fields
    actions = [_set_desired(verb) for verb in AGENT_ACTIONS]
    change_form_template = "admin/regions/change_form_actions.html"
    # "…": the button asks first (a page saying what will happen).
    console_actions = (("agent_drained", "Drain…"), ("agent_cordoned", "Cordon"), ("agent_uncordoned", "Uncordon"),
                       ("agent_revoked", "Revoke…"))
    RECENT_TASKS = 20

    def actions_allowed(self, obj: Agent) -> list[str]:
        return [f"agent_{AGENT_ACTIONS[verb][1]}" for verb in agent_actions_allowed(obj)]

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
              a.task.capability, a.number, a.task.max_attempts, attempt_outcome_badge(a), when(a.started_at),
              span(a.started_at, a.finished_at), TASK_BADGES.get(a.task.status, a.task.status),
              truncated(a.error, 60)) for a in attempts))
        return format_html("<table><thead><tr><th>task</th><th>capability</th><th>attempt</th><th>outcome here</th>"
                           "<th>started</th><th>duration</th><th>task now</th><th>error</th></tr></thead>"
                           "<tbody>{}</tbody></table>", rows)
