"""Agent registration tokens: made by the service and shown once."""
from __future__ import annotations

from django.contrib import admin
from django.urls import reverse

from console.shown_once import ShownOnceAdmin
from project.accounts.audit import audit_record
from regions.models import RegistrationToken
from regions.services.agents.registry import registration_token_create


@admin.register(RegistrationToken)
class RegistrationTokenAdmin(ShownOnceAdmin):
    """Added through the service (a token is generated, only its digest kept) and
    shown once; a row added with a form alone would hold no token at all."""

    list_display = ("name", "prefix", "created_at", "revoked_at")
    readonly_fields = ("prefix", "token_hash", "created_at")

    def get_fields(self, request, obj=None):
        return ["name"] if obj is None else ["name", "prefix", "created_at", "revoked_at"]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            if "revoked_at" in form.changed_data:
                audit_record(action="token.revoke" if obj.revoked_at else "token.unrevoke",
                             target=f"registration token {obj.name} ({obj.prefix}…)", request=request)
            return
        self.spend_ticket(request)
        token, raw = registration_token_create(name=form.cleaned_data["name"])
        obj.pk, obj.prefix, obj.token_hash, obj.created_at = token.pk, token.prefix, token.token_hash, token.created_at
        obj._state.adding, obj._state.db = False, token._state.db
        self.record_made(request, action="token.create", target=f"registration token {obj.name} ({obj.prefix}…)")
        request._meridian_tokens = [(obj.name, raw)]

    def response_add(self, request, obj, post_url_continue=None):
        return self.tokens_page(
            request, title=f"Registration token {obj.name} added", what="agent registration token",
            tokens=getattr(request, "_meridian_tokens", []),
            hint="Agents trade it for a credential of their own: manage.py run_agent --registration-token … "
                 "(or AGENT_REGISTRATION_TOKEN in their environment).",
            back=reverse("admin:regions_registrationtoken_changelist"))
