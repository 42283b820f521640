"""The region directory: regions added, changed and re-keyed through the services."""
from __future__ import annotations

import time

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from console.confirm import confirm_page, confirmed
from console.formatting import age_text, badge, exact_time
from console.shown_once import TICKET_FIELD, ShownOnceAdmin, TicketSpent, new_ticket
from project.accounts.audit import audited
from router import inputs, selectors
from router.admin.formatting import LabelsField, freshness_badge, label_chips, orchestrator_link
from router.admin.task_finder import task_finder_urls
from router.services.refusals import RouterError
from router.services.regions import (region_create, region_hold_validate, region_token_rotate, region_update,
                                     region_validate, region_watermark_reset)
from router.models import AddressRule, Region

CAPACITY_IN_LIST = 6


class RegionAddForm(forms.ModelForm):
    orchestrator_url = forms.CharField(max_length=inputs.MAX_URL_LENGTH,
                                       widget=forms.TextInput(attrs={"class": "vURLField", "size": 60}),
                                       help_text="where agents and callers reach the region, e.g. "
                                                 "https://eu-west-3.example.com")
    labels = LabelsField(required=False, help_text="comma-separated, e.g. eu, gdpr")
    summary_interval = forms.FloatField(initial=60.0, help_text="seconds between the region's summaries")

    class Meta:
        model = Region
        fields = ["region_id", "orchestrator_url", "labels", "summary_interval"]

    def _get_validation_exclusions(self):
        # The model's URLValidator refuses single-label hosts (http://us-east-1:8000);
        # the service holds the URL to the bounds summaries are held to.
        return super()._get_validation_exclusions() | {"orchestrator_url"}

    def clean(self):
        data = super().clean()
        if not self.errors:
            try:
                region_validate(region_id=data["region_id"], orchestrator_url=data["orchestrator_url"],
                                labels=data["labels"], summary_interval=data["summary_interval"])
            except RouterError as exc:
                raise forms.ValidationError(exc.detail) from None
        return data


class RegionChangeForm(RegionAddForm):
    class Meta:
        model = Region
        fields = ["orchestrator_url", "labels", "enabled", "capacity_ceiling", "weight"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields.pop("summary_interval", None)

    def clean(self):
        data = forms.ModelForm.clean(self)
        if not self.errors:
            try:
                region_validate(region_id=self.instance.region_id,
                                orchestrator_url=data["orchestrator_url"], labels=data["labels"],
                                summary_interval=selectors.region_interval(self.instance.summary_interval))
                region_hold_validate(capacity_ceiling=data.get("capacity_ceiling"), weight=data.get("weight", 1.0))
            except RouterError as exc:
                raise forms.ValidationError(exc.detail) from None
        return data


class AddressRuleInline(admin.TabularInline):
    model = AddressRule
    extra = 0


class ConfigFilter(admin.SimpleListFilter):
    """By configuration commit, named by its short sha (and subject) rather than 40 hex digits."""

    title = "config commit"
    parameter_name = "config"

    def lookups(self, request, model_admin):
        commits = {}
        for sha, subject in Region.objects.values_list("config_version", "config_subject" if hasattr(
                Region, "config_subject") else "config_version").distinct().order_by("config_version"):
            commits.setdefault(sha, "" if subject == sha else subject)
        return [(sha, f"{sha[:12]} {subject[:40]}".strip() if sha else "none reported")
                for sha, subject in commits.items()]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset if value is None else queryset.filter(config_version=value)


def _rotation_line(region: Region, now) -> str:
    """What rotating its token does to a region, from its summaries now."""
    if region.received_at is None:
        seen = "it has sent no summary yet"
    else:
        state = "stale" if selectors.region_is_stale(region, now) else "fresh"
        seen = f"its last summary came {age_text((now - region.received_at).total_seconds())} ({state})"
    return (f"{region.region_id}: {seen}; from now on its summaries are refused until its REGION_TOKEN is the "
            "new token" + ("" if region.enabled else " (it is disabled: routing skips it anyway)"))


SUMMARY_FIELDS = ("available_agents", "capacity_table", "last_updated_exact", "received_at_exact",
                  "freshness", "config_version", "config_subject_text", "config_since_exact", "schema_version",
                  "summary_interval")


@admin.register(Region)
class RegionAdmin(ShownOnceAdmin):
    list_display = ("region_id", "orchestrator", "label_list", "freshness", "agents", "capacity",
                    "forwards", "config", "enabled")
    list_select_related = ("forward_outcomes",)
    list_filter = ("enabled", ConfigFilter)
    search_fields = ("region_id", "orchestrator_url")
    inlines = [AddressRuleInline]
    actions = ["reset_replay_watermark", "rotate_token"]
    change_list_template = "admin/router/region/change_list.html"

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = RegionChangeForm if obj is not None else RegionAddForm
        kwargs["fields"] = None
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": ["region_id", "orchestrator_url", "labels", "summary_interval"],
                            "description": "The region's summary token is shown once, on the next page."})]
        return [
            (None, {"fields": ["region_id_text", "orchestrator_url", "labels", "enabled", "orchestrator_admin"]}),
            ("What its summaries are believed for", {"fields": ["capacity_ceiling", "weight"], "description":
                "Routing holds the region's claimed agents to the ceiling and multiplies its idle ones by the "
                "weight, whatever its summaries say."}),
            ("Latest summary (sent by the region, read-only)", {"fields": list(SUMMARY_FIELDS)}),
            ("Token", {"fields": ["token_fingerprint"],
                       "description": "Only the token's digest is stored. Rotate it with the "
                                      "“Rotate summary token” action of the region list."}),
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("region_id_text", "orchestrator_admin", "token_fingerprint") + SUMMARY_FIELDS

    # -- saving goes through the services

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            fields = ["orchestrator_url", "labels", "enabled", "capacity_ceiling", "weight"]
            before = Region.objects.filter(pk=obj.pk).values(*fields).get()
            changed = ", ".join(f"{name}: {before[name]} -> {data.get(name)}" for name in fields
                                if name in data and before[name] != data[name])
            with audited(request, "region.update", target=obj.region_id, detail=changed or "nothing changed"):
                region_update(region_id=obj.region_id, orchestrator_url=data["orchestrator_url"],
                              labels=data["labels"], enabled=data["enabled"],
                              capacity_ceiling=data.get("capacity_ceiling"), weight=data.get("weight", 1.0))
            return
        self.spend_ticket(request)
        region, raw = region_create(region_id=data["region_id"], orchestrator_url=data["orchestrator_url"],
                                    labels=data["labels"], summary_interval=data["summary_interval"])
        obj.pk, obj.token_hash, obj.orchestrator_url = region.pk, region.token_hash, region.orchestrator_url
        obj._state.adding, obj._state.db = False, region._state.db
        self.record_made(request, action="region.create", target=region.region_id)
        request._meridian_tokens = [(region.region_id, raw)]

    def response_add(self, request, obj, post_url_continue=None):
        return self.tokens_page(request, title=f"Region {obj.region_id} added", what="region summary token",
                                tokens=getattr(request, "_meridian_tokens", []),
                                hint="Set it as REGION_TOKEN in the region's environment; the region pushes "
                                     "its summaries with it.",
                                back=reverse("admin:router_region_change", args=[obj.pk]))

    # -- actions, through the services

    # One click: it only lets the region's next summary in whatever its date (a
    # region whose clock went back); nothing is lost, and the summaries after it
    # set the watermark again. Rotation below asks first: the old token dies.
    @admin.action(description="Reset replay watermark (accept the next summary whatever its date)",
                  permissions=["change"])
    def reset_replay_watermark(self, request, queryset):
        region_ids = list(queryset.values_list("region_id", flat=True))
        for region_id in region_ids:
            with audited(request, "region.reset_watermark", target=region_id):
                region_watermark_reset(region_id=region_id)
        self.message_user(request, f"Replay watermark cleared for {len(region_ids)} region(s): "
                                   f"{', '.join(region_ids)}.")

    @admin.action(description="Rotate summary token (the old one stops working at once)", permissions=["change"])
    def rotate_token(self, request, queryset):
        region_ids = list(queryset.values_list("region_id", flat=True))
        if not confirmed(request):
            now = timezone.now()
            regions = list(queryset.order_by("region_id"))
            return confirm_page(
                self, request, regions, action="rotate_token", title="Rotate summary tokens?",
                intro="A new summary token is made for each of these regions and shown once on the next page. Each "
                      "old token stops working at once: the region's summaries are refused (and routing soon skips "
                      "it as stale) until its REGION_TOKEN is set to the new one.",
                lines=[_rotation_line(region, now) for region in regions],
                submit=f"Yes, rotate {len(regions)} token{'s' if len(regions) != 1 else ''}",
                hidden={TICKET_FIELD: new_ticket()})
        tokens = []
        try:
            with transaction.atomic():
                self.spend_ticket(request)
                for region_id in region_ids:
                    tokens.append((region_id, region_token_rotate(region_id=region_id)[1]))
                    self.record_made(request, action="region.rotate_token", target=region_id)
        except TicketSpent:
            return self.sent_before_page(request)
        return self.tokens_page(request, title=f"New summary token for {len(region_ids)} region(s)",
                                what="region summary token", tokens=tokens,
                                hint="The old token no longer works: set the new one as REGION_TOKEN in each "
                                     "region's environment; its summaries are refused until then.",
                                back=reverse("admin:router_region_changelist"))

    # -- deleting a region is in the audit trail too (Django's own confirmation asks first)

    def delete_model(self, request, obj):
        with audited(request, "region.delete", target=obj.region_id):
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for region in queryset:
            self.delete_model(request, region)

    # -- columns and read-only fields

    @admin.display(description="region", ordering="region_id")
    def region_id_text(self, region):
        return region.region_id

    @admin.display(description="orchestrator", ordering="orchestrator_url")
    def orchestrator(self, region):
        return orchestrator_link(region.orchestrator_url)

    @admin.display(description="region's admin")
    def orchestrator_admin(self, region):
        return orchestrator_link(region.orchestrator_url)

    @admin.display(description="labels")
    def label_list(self, region):
        return label_chips(region.labels)

    @admin.display(description="summary", ordering="received_at")
    def freshness(self, region):
        return freshness_badge(region)

    @admin.display(description="agents", ordering="available_agents")
    def agents(self, region):
        return region.available_agents

    @admin.display(description="idle/total per capability")
    def capacity(self, region):
        caps = selectors.region_capacity(region)
        items = format_html_join(" · ", '<span style="white-space:nowrap">{} {}/{}</span>',
                                 ((c["capability"], c["idle"], c["count"]) for c in caps[:CAPACITY_IN_LIST]))
        if len(caps) > CAPACITY_IN_LIST:
            items = format_html("{} · +{} more", items, len(caps) - CAPACITY_IN_LIST)
        return items or "—"

    @admin.display(description="forwards lately")
    def forwards(self, region):
        penalty = selectors.region_forward_penalty(region)
        if penalty is None:
            return "—"
        return format_html('<span class="mrd-forwards" title="ranked lower by it until none fails for {} s">'
                           "{}% failed · last {} {}</span>",
                           f"{settings.ROUTER_FORWARD_PENALTY_WINDOW_SECONDS:g}", round(penalty.rate * 100),
                           penalty.last_failure, age_text(time.time() - penalty.failed_at))

    @admin.display(description="capacity")
    def capacity_table(self, region):
        caps = selectors.region_capacity(region)
        if not caps:
            return "no capability reported"
        rows = format_html_join("", "<tr><td>{}</td><td>{}/{}</td></tr>",
                                ((c["capability"], c["idle"], c["count"]) for c in caps))
        return format_html('<table class="mrd-capacity"><thead><tr><th>capability</th><th>idle/total</th></tr>'
                           "</thead><tbody>{}</tbody></table>", rows)

    @admin.display(description="config", ordering="config_version")
    def config(self, region):
        if not region.config_version:
            return "—"
        return format_html('<code title="{}">{}</code>', region.config_version, region.config_version[:12])

    @admin.display(description="config subject")
    def config_subject_text(self, region):
        return getattr(region, "config_subject", "") or "—"

    @admin.display(description="last updated (region's clock; the replay watermark)")
    def last_updated_exact(self, region):
        return exact_time(region.last_updated)

    @admin.display(description="received at (router's clock)")
    def received_at_exact(self, region):
        return exact_time(region.received_at)

    @admin.display(description="on this config since")
    def config_since_exact(self, region):
        if region.config_since is None:
            return "—"
        return format_html("{} ({})", exact_time(region.config_since),
                           age_text((timezone.now() - region.config_since).total_seconds()))

    @admin.display(description="token")
    def token_fingerprint(self, region):
        if not region.token_hash:
            return "none"
        return format_html("set; digest <code>sha256:{}…</code> (not the token)", region.token_hash[:8])

    # -- the drift page

    def get_urls(self):
        return [path("drift/", self.admin_site.admin_view(self.drift_view), name="router_region_drift"),
                *task_finder_urls(self), *super().get_urls()]

    def drift_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        drift = selectors.config_drift_groups()
        for group in drift["groups"]:
            for region in group["regions"]:
                region["age"] = age_text(region["seconds"]) if region["seconds"] is not None else "—"
                region["since_exact"] = exact_time(region["since"])
                region["badge"] = badge("stale", "red") if region["stale"] else badge("fresh", "green")
        return TemplateResponse(request, "admin/router/region/drift.html", {
            **self.admin_site.each_context(request), "title": "Configuration drift", "drift": drift,
            "majority_badge": badge("majority", "green"),
            "opts": self.model._meta,
        })
