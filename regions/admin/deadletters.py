"""Dead letters: what the region's consumers dropped."""
from __future__ import annotations

from django.contrib import admin

from console.formatting import wrapped

from regions.models import DeadLetter


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    """Read-only: what the region's consumers dropped, and why. Nothing is
    deleted here either (no delete page, no bulk delete action): they are the
    evidence of what went wrong."""

    list_display = ("received_at", "source", "queue", "task_name", "task_id", "reason_text")
    list_filter = ("source", "queue", "task_name")
    search_fields = ("task_id", "reason", "source")
    date_hierarchy = "received_at"

    @admin.display(description="reason", ordering="reason")
    def reason_text(self, obj: DeadLetter):
        return wrapped(obj.reason, 200)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
