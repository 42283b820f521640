"""What the router's admin pages show a region as: its freshness, labels and console link; labels typed as text."""
from __future__ import annotations

from datetime import datetime

from django import forms
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from console.formatting import WRAP_STYLE, age, badge, exact_time
from router import inputs, selectors
from router.models import Region

def freshness_badge(region: Region, now: datetime | None = None):
    now = now or timezone.now()
    if region.received_at is None:
        return format_html("{} never", badge("stale", "red", "no summary received yet"))
    stale = selectors.region_is_stale(region, now)
    limit = selectors.STALE_AFTER_INTERVALS * selectors.region_interval(region.summary_interval)
    title = f"last summary {exact_time(region.received_at)}; stale after {limit:g} s without one"
    return format_html('<span style="white-space:nowrap">{} {}</span>',
                       badge("stale", "red", title) if stale else badge("fresh", "green", title),
                       age(region.received_at, now))


def label_chips(labels) -> str:
    chips = format_html_join(
        " ", '<span class="mrd-chip" style="display:inline-block;padding:0 6px;border:1px solid #999;'
        'border-radius:9px;font-size:11px">{}</span>', ((label,) for label in selectors.region_labels(labels)))
    return format_html('<span style="{}">{}</span>', WRAP_STYLE, chips) if chips else "—"


def orchestrator_link(url: str):
    """The region's own admin, in a new tab; plain text if the stored URL is not http(s)."""
    url = (url or "").rstrip("/")
    if not inputs.orchestrator_url(url):
        return url or "—"
    return format_html('<a href="{}/admin/" target="_blank" rel="noopener noreferrer" style="{}">{}</a>', url,
                       WRAP_STYLE, url)


class LabelsField(forms.CharField):
    """Labels as an operator types them: comma-separated."""

    def prepare_value(self, value):
        if isinstance(value, list):
            return ", ".join(str(v) for v in value)
        return value

    def to_python(self, value):
        value = super().to_python(value)
        return [label.strip() for label in value.split(",") if label.strip()]
