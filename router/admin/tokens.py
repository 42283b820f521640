"""Agent registration tokens at the router: made through the service, shown once, revoked."""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from console.confirm import confirm_page, confirmed
from console.formatting import exact_time
from console.shown_once import ShownOnceAdmin
from project.accounts.audit import audit_record, audited
from project.accounts.registration import bounds_describe, uses_describe
from router.admin.formatting import LabelsField
from router.models import RegistrationToken
from router.services.regions import registration_token_create, registration_token_revoke
from wire.endpoints import DISCOVER


def _name(token: RegistrationToken) -> str:
    return f"registration token {token.name} ({token.prefix}…)"


class RegistrationTokenForm(forms.ModelForm):
    regions = LabelsField(required=False, help_text="comma-separated region ids; empty means every region")

    class Meta:
        model = RegistrationToken
        fields = ["name", "regions", "max_uses", "expires_at"]


@admin.register(RegistrationToken)
class RegistrationTokenAdmin(ShownOnceAdmin):
    form = RegistrationTokenForm
    list_display = ("name", "prefix_text", "regions", "uses_text", "expires_exact", "created_exact",
                    "revoked_exact")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    readonly_fields = ("prefix_text", "created_exact", "revoked_exact", "uses_text", "last_used_exact")
    actions = ["revoke"]

    def get_fields(self, request, obj=None):
        editable = ["name", "regions", "max_uses", "expires_at"]
        return editable if obj is None else [*editable, "uses_text", "last_used_exact", "prefix_text",
                                             "created_exact", "revoked_exact"]

    def save_model(self, request, obj, form, change):
        if change:
            # Not `uses`: placements count it meanwhile.
            obj.save(update_fields=["name", "regions", "max_uses", "expires_at"])
            audit_record(action="token.update", target=f"registration token {obj.name} ({obj.prefix}…)",
                         request=request, detail=f"regions: {obj.regions or 'every region'}; "
                                                 f"{bounds_describe(max_uses=obj.max_uses, expires_at=obj.expires_at)}")
            return
        self.spend_ticket(request)
        token, raw = registration_token_create(name=form.cleaned_data["name"],
                                               regions=form.cleaned_data["regions"],
                                               max_uses=form.cleaned_data.get("max_uses"),
                                               expires_at=form.cleaned_data.get("expires_at"))
        obj.pk, obj.prefix, obj.token_hash = token.pk, token.prefix, token.token_hash
        obj._state.adding, obj._state.db = False, token._state.db
        self.record_made(request, action="token.create", target=f"registration token {token.name} ({token.prefix}…)",
                         detail=f"regions: {', '.join(token.regions) or 'every region'}; "
                                f"{bounds_describe(max_uses=token.max_uses, expires_at=token.expires_at)}")
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
        tokens = list(queryset)
        live = [token for token in tokens if token.revoked_at is None]
        refused = [f"{_name(token)} is revoked already" for token in tokens if token.revoked_at is not None]
        if live and not confirmed(request):
            return confirm_page(
                self, request, live, action="revoke", title=f"Revoke {len(live)} registration token(s)?",
                refused=refused,
                lines=[f"{_name(token)} ({uses_describe(token)}; regions: {', '.join(token.regions) or 'every region'})"
                       f": no agent can register with it from now on; agents it admitted keep their own "
                       f"credentials" for token in live],
                submit=f"Yes, revoke {len(live)} token{'s' if len(live) != 1 else ''}")
        revoked = 0
        for token in live:
            if registration_token_revoke(token_id=token.pk):
                audit_record(action="token.revoke", target=_name(token), request=request)
                revoked += 1
            else:
                refused.append(f"{_name(token)} is revoked already")
        self.message_user(request, f"{revoked} registration token(s) revoked.", messages.SUCCESS)
        if refused:
            self.message_user(request, "Not revoked: " + "; ".join(refused[:10]), messages.WARNING)

    # Deleting is in the audit trail too (Django's own confirmation asks first).
    def delete_model(self, request, obj):
        with audited(request, "token.delete", target=_name(obj)):
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for token in queryset:
            self.delete_model(request, token)

    @admin.display(description="token", ordering="prefix")
    def prefix_text(self, token):
        return format_html("<code>{}…</code>", token.prefix)

    @admin.display(description="created", ordering="created_at")
    def created_exact(self, token):
        return exact_time(token.created_at)

    @admin.display(description="revoked", ordering="revoked_at")
    def revoked_exact(self, token):
        return exact_time(token.revoked_at) if token.revoked_at else "—"

    @admin.display(description="uses")
    def uses_text(self, token):
        return uses_describe(token)

    @admin.display(description="expires", ordering="expires_at")
    def expires_exact(self, token):
        return exact_time(token.expires_at) if token.expires_at else "never"

    @admin.display(description="last used", ordering="last_used_at")
    def last_used_exact(self, token):
        return exact_time(token.last_used_at) if token.last_used_at else "—"
