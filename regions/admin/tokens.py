"""Agent registration tokens: made by the service and shown once."""
from __future__ import annotations

from django.contrib import admin
from django.urls import reverse

from console.shown_once import ShownOnceAdmin
from project.accounts.audit import audit_record, audited
from project.accounts.registration import bounds_describe, uses_describe
from regions.models import RegistrationToken
from regions.services.agents.registry import registration_token_create


@admin.register(RegistrationToken)
class RegistrationTokenAdmin(ShownOnceAdmin):
    """Added through the service (a token is generated, only its digest kept) and
    shown once; a row added with a form alone would hold no token at all."""

    list_display = ("name", "prefix", "uses_text", "expires_at", "last_used_at", "created_at", "revoked_at")
    readonly_fields = ("prefix", "token_hash", "created_at", "uses_text", "last_used_at")

    def get_fields(self, request, obj=None):
        bounds = ["max_uses", "expires_at"]
        return ["name", *bounds] if obj is None else ["name", "prefix", "created_at", "revoked_at", *bounds,
                                                      "uses_text", "last_used_at"]

    def save_model(self, request, obj, form, change):
        if change:
            # Only what the form changed: `uses` is counted by registrations meanwhile.
            changed = [f for f in ("name", "revoked_at", "max_uses", "expires_at") if f in form.changed_data]
            if changed:
                obj.save(update_fields=changed)
            target = f"registration token {obj.name} ({obj.prefix}…)"
            if "revoked_at" in changed:
                audit_record(action="token.revoke" if obj.revoked_at else "token.unrevoke", target=target,
                             request=request)
            if {"max_uses", "expires_at"} & set(changed):
                audit_record(action="token.update", target=target, request=request,
                             detail=bounds_describe(max_uses=obj.max_uses, expires_at=obj.expires_at))
            return
        self.spend_ticket(request)
        token, raw = registration_token_create(name=form.cleaned_data["name"],
                                               max_uses=form.cleaned_data.get("max_uses"),
                                               expires_at=form.cleaned_data.get("expires_at"))
        obj.pk, obj.prefix, obj.token_hash, obj.created_at = token.pk, token.prefix, token.token_hash, token.created_at
        obj._state.adding, obj._state.db = False, token._state.db
        self.record_made(request, action="token.create", target=f"registration token {obj.name} ({obj.prefix}…)",
                         detail=bounds_describe(max_uses=token.max_uses, expires_at=token.expires_at))
        request._meridian_tokens = [(obj.name, raw)]

    def response_add(self, request, obj, post_url_continue=None):
        return self.tokens_page(
            request, title=f"Registration token {obj.name} added", what="agent registration token",
            tokens=getattr(request, "_meridian_tokens", []),
            hint="Agents trade it for a credential of their own: manage.py run_agent --registration-token … "
                 "(or AGENT_REGISTRATION_TOKEN in their environment).",
            back=reverse("admin:regions_registrationtoken_changelist"))

    # Deleting is in the audit trail too (Django's own confirmation asks first).
    def delete_model(self, request, obj):
        with audited(request, "token.delete", target=f"registration token {obj.name} ({obj.prefix}…)"):
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for token in queryset:
            self.delete_model(request, token)

    @admin.display(description="uses")
    def uses_text(self, token):
        return uses_describe(token)
