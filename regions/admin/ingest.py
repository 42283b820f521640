"""Records ingested by tasks."""
from __future__ import annotations

from django.contrib import admin

from regions.admin.base import ReadOnlyAdmin
from regions.models import IngestedRecord


@admin.register(IngestedRecord)
class IngestedRecordAdmin(ReadOnlyAdmin):
    """Read-only, as every page here: what a task ingested is its output."""

    list_display = ("task", "line")
    raw_id_fields = ("task",)
