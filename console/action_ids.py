"""The ids an admin action is posted with, checked before Django reads them
(both roles' consoles, every model's list: console/admin_site.py). Django's
response_action filters pk__in with the raw ids, so an id that is not one of
the model's (a forged or mangled post: "//evil.example" for an integer or UUID
primary key) raised inside the query and answered 500. It is now a 400 page
naming the id, and nothing is done, not even to the good ids beside it."""
from __future__ import annotations

from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError
from django.template.response import TemplateResponse

SHOWN = 10  # ids named on the page; a forged post may carry thousands


def malformed_ids(model_admin, request) -> list[str]:
    """The selected ids of an action posted to model_admin's list that are not
    ids of its model: the primary key field neither takes them nor would put
    them in a query (a NUL, an integer out of range)."""
    if request.method != "POST" or "_save" in request.POST:  # "_save": the list's own form, no action
        return []
    pk = model_admin.model._meta.pk
    bad = []
    for value in request.POST.getlist(ACTION_CHECKBOX_NAME):
        try:
            if "\x00" in value:
                raise ValidationError("NUL")
            pk.get_prep_value(pk.to_python(value))
        except (ValidationError, ValueError, TypeError, OverflowError):
            bad.append(value)
    return bad


def malformed_ids_page(model_admin, request, bad: list[str]) -> TemplateResponse:
    opts = model_admin.model._meta
    named = [repr(value[:80]) for value in bad[:SHOWN]]
    more = len(bad) - len(named)
    response = TemplateResponse(request, "admin/action_ids_refused.html", {
        **model_admin.admin_site.each_context(request), "title": "Not an id", "opts": opts,
        "named": named, "more": more,
    }, status=400)
    return response
