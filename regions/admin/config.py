"""Configuration versions: every commit the region tried to apply."""
from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html

from console.formatting import badge, when, wrapped
from regions.admin.base import ReadOnlyAdmin
from regions.admin.formatting import pretty_json
from regions.models import ConfigVersion


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
        return wrapped(obj.error, 200, "error")

    @admin.display(description="changes")
    def changes_pretty(self, obj: ConfigVersion):
        return pretty_json(obj.changes)

    @admin.display(description="content (secrets as references only)")
    def content_pretty(self, obj: ConfigVersion):
        return pretty_json(obj.content)
