"""Agent registration tokens: made by the service and shown once."""
from __future__ import annotations

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import reverse

from regions.models import RegistrationToken
from regions.services.agents.registry import registration_token_create


@admin.register(RegistrationToken)
class RegistrationTokenAdmin(admin.ModelAdmin):
    """Added through the service (a token is generated, only its digest kept) and
    shown once; a row added with a form alone would hold no token at all."""

    list_display = ("name", "prefix", "created_at", "revoked_at")
    readonly_fields = ("prefix", "token_hash", "created_at")

    def get_fields(self, request, obj=None):
        return ["name"] if obj is None else ["name", "prefix", "created_at", "revoked_at"]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        token, raw = registration_token_create(name=form.cleaned_data["name"])
        obj.pk, obj.prefix, obj.token_hash, obj.created_at = token.pk, token.prefix, token.token_hash, token.created_at
        obj._state.adding, obj._state.db = False, token._state.db
        request._meridian_tokens = [(obj.name, raw)]

    def response_add(self, request, obj, post_url_continue=None):
        response = TemplateResponse(request, "admin/token_once.html", {
            **self.admin_site.each_context(request), "title": f"Registration token {obj.name} added",
            "what": "agent registration token", "tokens": getattr(request, "_meridian_tokens", []),
            "hint": "Agents trade it for a credential of their own: manage.py run_agent --registration-token … "
                    "(or AGENT_REGISTRATION_TOKEN in their environment).",
            "back": reverse("admin:regions_registrationtoken_changelist"), "opts": self.model._meta,
        })
        response["Cache-Control"] = "no-store"
        return response
