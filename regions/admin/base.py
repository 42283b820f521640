"""The base of every read-only page of the region's admin."""
from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.http import HttpResponseRedirect
from django.urls import reverse

from project.accounts.audit import audited
from project.exceptions import Refused
from regions.services.tasks.refusals import InvalidState


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewed, never edited here: what changes goes through an action. The
    actions named in `console_actions` are buttons on the object's page too."""

    console_actions: tuple[tuple[str, str], ...] = ()

    def has_operate_permission(self, request) -> bool:
        """Running an action (drain, revoke, retry, cancel) is changing the model:
        it needs the model's change permission, not only view (the form itself
        stays read-only for everyone)."""
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    def render_change_form(self, request, context, *args, **kwargs):
        if self.console_actions and self.has_operate_permission(request):
            context["console_actions"] = self.console_actions
            context["changelist_url"] = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
        return super().render_change_form(request, context, *args, **kwargs)

    def response_action(self, request, queryset):
        response = super().response_action(request, queryset)
        selected = request.POST.getlist(ACTION_CHECKBOX_NAME)
        if response is not None and request.POST.get("_from_detail") and len(selected) == 1:
            return HttpResponseRedirect(
                reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[selected[0]]))
        return response

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def act_on_each(model_admin, request, objects, *, action: str, service, noun: str, verb: str,
                logged=None, only: str = "") -> None:
    """An admin action's loop: service(obj) for each object, audited as `action`
    and in the object's History (logged(obj), else the verb); then one message
    with how many, one with how many did not apply (InvalidState: `only` says
    which do) and one naming any other refusal (a capability refused since, a
    rate limit, a quota)."""
    done, not_applicable, refused = 0, 0, []
    for obj in objects:
        try:
            with audited(request, action, target=str(obj.pk)):
                service(obj)
            model_admin.log_change(request, obj, logged(obj) if logged else verb)
            done += 1
        except InvalidState:
            not_applicable += 1
        except Refused as exc:
            refused.append(f"{obj.pk}: {exc}")
    messages.info(request, f"{done} {noun}(s) {verb}.")
    if not_applicable and only:
        messages.warning(request, f"{not_applicable} {noun}(s) not {verb}: {only}")
    if refused:
        messages.error(request, f"Not {verb}: " + "; ".join(refused[:10]))
