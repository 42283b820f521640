"""Agent registration tokens at the router: made through the service, shown once, revoked."""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from console.formatting import exact_time
from console.shown_once import ShownOnceAdmin
from project.accounts.audit import audit_record
from router.admin.formatting import LabelsField
from router.models import RegistrationToken
from router.services.regions import registration_token_create, registration_token_revoke
from wire.endpoints import DISCOVER


class RegistrationTokenForm(forms.ModelForm):
    regions = LabelsField(required=False, help_text="comma-separated region ids; empty means every region")

    class Meta:
        model = RegistrationToken
        fields = ["name", "regions"]


@admin.register(RegistrationToken)
class RegistrationTokenAdmin(ShownOnceAdmin):
    form = RegistrationTokenForm
    list_display = ("name", "prefix_text", "regions", "created_exact", "revoked_exact")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    readonly_fields = ("prefix_text", "created_exact", "revoked_exact")
    actions = ["revoke"]

    def get_fields(self, request, obj=None):
        return ["name", "regions"] if obj is None else ["name", "regions", "prefix_text", "created_exact",
                                                        "revoked_exact"]

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["name", "regions"])
            audit_record(action="token.update", target=f"registration token {obj.name} ({obj.prefix}…)",
                         request=request, detail=f"regions: {obj.regions or 'every region'}")
            return
        self.spend_ticket(request)
        token, raw = registration_token_create(name=form.cleaned_data["name"],
                                               regions=form.cleaned_data["regions"])
        obj.pk, obj.prefix, obj.token_hash = token.pk, token.prefix, token.token_hash
        obj._state.adding, obj._state.db = False, token._state.db
        self.record_made(request, action="token.create", target=f"registration token {token.name} ({token.prefix}…)",
                         detail=f"regions: {', '.join(token.regions) or 'every region'}")
        request._meridian_tokens = [(token.name, raw)]

    def response_add(self, request, obj, post_url_continue=None):
        return self.tokens_page(
            request, title=f"Registration token {obj.name} created", what="agent registration token",
            tokens=getattr(request, "_meridian_tokens", []),
            hint=f"Agents present it to POST {DISCOVER.url()} (run_agent --registration-token or "
                 "AGENT_REGISTRATION_TOKEN in the agent's environment).",
            back=reverse("admin:router_registrationtoken_changelist"))

    @admin.action(description="Revoke selected registration tokens", permissions=["change"])
    def revoke(self, request, queryset):
        revoked = 0
        for token in queryset:
            if registration_token_revoke(token_id=token.pk):
                audit_record(action="token.revoke", target=f"registration token {token.name} ({token.prefix}…)",
                             request=request)
                revoked += 1
        self.message_user(request, f"{revoked} registration token(s) revoked.", messages.SUCCESS)

    @admin.display(description="token", ordering="prefix")
    def prefix_text(self, token):
        return format_html("<code>{}…</code>", token.prefix)

    @admin.display(description="created", ordering="created_at")
    def created_exact(self, token):
        return exact_time(token.created_at)

    @admin.display(description="revoked", ordering="revoked_at")
    def revoked_exact(self, token):
        return exact_time(token.revoked_at) if token.revoked_at else "—"
