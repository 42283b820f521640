"""Records ingested by tasks."""
from __future__ import annotations

from django.contrib import admin

from regions.models import IngestedRecord


@admin.register(IngestedRecord)
class IngestedRecordAdmin(admin.ModelAdmin):
    list_display = ("task", "line")
    raw_id_fields = ("task",)
