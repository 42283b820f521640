"""Admin pages that make a credential and show it once (both roles).

The page that shows a token answers the POST that made it, so a browser's
refresh (or back and resend) sends that POST again. Each form that makes one
carries a ticket; making it records the ticket in the audit trail, and a
second POST with a used ticket makes nothing: it is answered 409 with a page
saying so. (Each refresh once made, and showed, another token.)
"""
from __future__ import annotations

import secrets

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import reverse

from project.accounts.audit import audit_record
from project.accounts.models import AuditEvent

TICKET_FIELD = "shown_once_ticket"


def new_ticket() -> str:
    return secrets.token_urlsafe(18)


def ticket_detail(ticket: str) -> str:
    return f"form ticket {ticket}"


def ticket_used(ticket: str) -> bool:
    return AuditEvent.objects.filter(detail__endswith=ticket_detail(ticket), outcome="done").exists()


class ShownOnceAdmin(admin.ModelAdmin):
    """An admin whose add form (or an action) makes a credential shown once."""

    add_form_template = "admin/shown_once_add_form.html"  # the add form, with a ticket

    def add_view(self, request, form_url="", extra_context=None):
        # A post without a ticket (a script's) is not checked: a browser always sends it back.
        if request.method == "POST" and self.sent_before(request):
            return self.sent_before_page(request)
        return super().add_view(request, form_url, {**(extra_context or {}), "ticket_field": TICKET_FIELD,
                                                    "ticket": new_ticket()})

    def sent_before(self, request) -> bool:
        ticket = request.POST.get(TICKET_FIELD, "")
        return bool(ticket) and ticket_used(ticket)

    def record_made(self, request, *, action: str, target: str) -> None:
        """The credential was made: the audit trail says by whom, and spends the form's ticket."""
        ticket = request.POST.get(TICKET_FIELD, "")
        audit_record(action=action, target=target, request=request, detail=ticket_detail(ticket) if ticket else "")

    def tokens_page(self, request, *, title: str, what: str, hint: str, back: str,
                    tokens: list[tuple[str, str]]) -> TemplateResponse:
        response = TemplateResponse(request, "admin/token_once.html", {
            **self.admin_site.each_context(request), "title": title, "what": what, "hint": hint,
            "tokens": tokens, "back": back, "opts": self.model._meta,
        })
        response["Cache-Control"] = "no-store"
        return response

    def sent_before_page(self, request) -> TemplateResponse:
        response = self.tokens_page(
            request, title="Already made", what="token", tokens=[],
            hint="This form was sent before: what it made was shown once, on the page that answered it, and "
                 "nothing more was made now. To make another, open a new form.",
            back=reverse(f"admin:{self.model._meta.app_label}_{self.model._meta.model_name}_changelist"))
        response.status_code = 409
        return response
