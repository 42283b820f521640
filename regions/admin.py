from django.contrib import admin, messages

from regions.models import Agent, DeadLetter, IngestedRecord, RegistrationToken, Task
from regions.services import agents as agent_services
from regions.services import tasks as task_services


def _set_desired(desired: str, label: str):
    def action(modeladmin, request, queryset):
        for agent in queryset:
            agent_services.agent_set_desired(agent_id=agent.agent_id, desired=desired)
        messages.info(request, f"{queryset.count()} agent(s) {label}.")

    action.short_description = f"{label.capitalize()} selected agents"
    action.__name__ = f"agent_{label}"
    return action


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("agent_id", "status", "desired", "busy", "kind", "version", "last_seen", "registered_at")
    list_filter = ("status", "desired", "busy", "kind", "version")
    search_fields = ("agent_id", "hostname")
    readonly_fields = ("token_hash", "registered_at", "last_seen", "offline_since")
    actions = [_set_desired("draining", "drained"), _set_desired("cordoned", "cordoned"),
               _set_desired("active", "uncordoned"), _set_desired("stopped", "revoked")]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("id", "capability", "status", "attempt", "max_attempts", "agent", "created_at", "finished_at")
    list_filter = ("status", "capability")
    search_fields = ("id", "idempotency_key", "agent")
    readonly_fields = [f.name for f in Task._meta.fields]
    actions = ["cancel"]

    @admin.action(description="Cancel selected tasks")
    def cancel(self, request, queryset):
        done = 0
        for task in queryset.filter(status__in=Task.ACTIVE):
            try:
                task_services.task_cancel(task=task)
                done += 1
            except task_services.InvalidState:
                pass
        messages.info(request, f"{done} task(s) cancelled.")


@admin.register(RegistrationToken)
class RegistrationTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "created_at", "revoked_at")
    readonly_fields = ("prefix", "token_hash", "created_at")


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
