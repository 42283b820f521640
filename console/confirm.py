"""The confirmation step of an admin action that cannot be undone, in both roles'
consoles (Django's delete_selected pattern): the first post answers a page saying
what the action will do; only the form on that page, sent with post=yes, acts."""
from __future__ import annotations

from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.template.response import TemplateResponse
from django.urls import reverse

REFUSALS_SHOWN = 20
# A confirmation form carries the ids it was drawn for, unless there are more
# than this (Django refuses a form of over DATA_UPLOAD_MAX_NUMBER_FIELDS, 1000):
# then "select all" is sent on, and the action takes the list's filter as it is.
IDS_CARRIED = 900


def confirmed(request) -> bool:
    """The "Yes, I'm sure" form of the confirmation page was sent."""
    return request.POST.get("post") == "yes"


def confirm_page(model_admin, request, objects: list, *, action: str, title: str, lines: list[str],
                 submit: str, refused: list[str] = (), intro: str = "",
                 hidden: dict[str, str] | None = None) -> TemplateResponse | None:
    """The page an action answers first: what it will do to each object (lines,
    from their state now), which selected ones it leaves alone and why (refused),
    and a form that sends the action again with post=yes (and the hidden fields,
    such as a form's one-use ticket). None when nothing selected applies: the
    caller says why."""
    if not objects:
        return None
    opts = model_admin.model._meta
    refused = list(refused)
    if len(refused) > REFUSALS_SHOWN:
        refused = [*refused[:REFUSALS_SHOWN], f"… and {len(refused) - REFUSALS_SHOWN} more"]
    from_detail = bool(request.POST.get("_from_detail")) and len(objects) == 1
    across = request.POST.get("select_across") in ("1", "True", "true") and len(objects) > IDS_CARRIED
    back = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[objects[0].pk]) if from_detail else \
        reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return TemplateResponse(request, "admin/action_confirm.html", {
        **model_admin.admin_site.each_context(request), "title": title, "opts": opts, "lines": lines,
        "refused": refused, "objects": objects[:1] if across else objects, "action": action, "submit": submit,
        "back": back, "intro": intro, "across": len(objects) if across else 0,
        "hidden": {**(hidden or {}), **({"_from_detail": "1"} if from_detail else {}),
                   **({"select_across": "1"} if across else {})},
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
    })
