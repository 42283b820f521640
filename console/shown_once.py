"""Admin pages that make a credential and show it once (both roles).

The page that shows a token answers the POST that made it, so a browser's
refresh (or back and resend, or a double click) sends that POST again. Each
form that makes one carries a ticket, spent (a unique row) in the same
transaction as what it makes: a second POST with the same ticket makes nothing
and is answered 409 with a page saying so, even while the first is still under
way. (Each refresh once made, and showed, another token.)
"""
from __future__ import annotations

import secrets

from django.contrib import admin
from django.db import IntegrityError, transaction
from django.template.response import TemplateResponse
from django.urls import reverse

from project.accounts.audit import audit_record
from project.accounts.models import SpentTicket

TICKET_FIELD = "shown_once_ticket"


def new_ticket() -> str:
    return secrets.token_urlsafe(18)


class TicketSpent(Exception):
    """The form was sent before: what it made is not made again."""


class ShownOnceAdmin(admin.ModelAdmin):
    """An admin whose add form (or an action) makes a credential shown once."""

    add_form_template = "admin/shown_once_add_form.html"  # the add form, with a ticket

    def add_view(self, request, form_url="", extra_context=None):
        try:  # the add form saves in one transaction: a spent ticket undoes all of it
            return super().add_view(request, form_url, {**(extra_context or {}), "ticket_field": TICKET_FIELD,
                                                        "ticket": new_ticket()})
        except TicketSpent:
            return self.sent_before_page(request)

    def spend_ticket(self, request) -> None:
        """Before making anything, inside the transaction that makes it: TicketSpent
        if the form's ticket was spent (a post without one, a script's, is not checked)."""
        ticket = request.POST.get(TICKET_FIELD, "")
        if not ticket:
            return
        try:
            with transaction.atomic():
                SpentTicket.objects.create(ticket=ticket[:64])
        except IntegrityError:
            raise TicketSpent from None

    def record_made(self, request, *, action: str, target: str, detail: str = "") -> None:
        """The credential was made: the audit trail says by whom."""
        audit_record(action=action, target=target, request=request, detail=detail)

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
