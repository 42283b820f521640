"""The base of every read-only page of the region's admin, and the loop and the
confirmation step its actions share."""
from __future__ import annotations

from collections.abc import Callable, Iterable

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from console.confirm import confirm_page, confirmed
from project.accounts.audit import audited
from project.exceptions import Refused
from regions.services import liveness
from regions.services.tasks.refusals import InvalidState


class NotApplicable(Refused):
    """The console's rule says the action does not apply to the object as it is
    (a button it did not offer, posted anyway, or a page drawn before a change)."""

    status, code = 409, "conflict"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewed, never edited here: what changes goes through an action. The
    actions named in `console_actions` are buttons on the object's page too,
    those of them `actions_allowed(obj)` names."""

    console_actions: tuple[tuple[str, str], ...] = ()

    def has_operate_permission(self, request) -> bool:
        """Running an action (drain, revoke, retry, cancel) is changing the model:
        it needs the model's change permission, not only view (the form itself
        stays read-only for everyone)."""
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    def actions_allowed(self, obj) -> list[str]:
        """The names of console_actions that apply to obj (the same rule the action refuses with)."""
        return [name for name, _ in self.console_actions]

    def render_change_form(self, request, context, *args, **kwargs):
        obj = context.get("original")
        if self.console_actions and obj is not None and self.has_operate_permission(request):
            allowed = set(self.actions_allowed(obj))
            context["console_actions"] = [(name, label) for name, label in self.console_actions if name in allowed]
            context["changelist_url"] = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
        return super().render_change_form(request, context, *args, **kwargs)

    def response_action(self, request, queryset):
        response = super().response_action(request, queryset)
        selected = request.POST.getlist(ACTION_CHECKBOX_NAME)
        # Back to the object's page once done; a confirmation page (200) is shown as it is.
        if isinstance(response, HttpResponseRedirect) and request.POST.get("_from_detail") and len(selected) == 1:
            return HttpResponseRedirect(
                reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[selected[0]]))
        return response

    def act_on_each(self, request, objects, **kwargs):
        """act_on_each(self, ...) below: the loop (and the confirmation) of this admin's actions."""
        return act_on_each(self, request, objects, **kwargs)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def refusals_of(objects: Iterable, refusal: Callable[[object], str | None]) -> tuple[list, list[str]]:
    """(the objects the action applies to, why each other one is left alone)."""
    applicable, refused = [], []
    for obj in objects:
        why = refusal(obj)
        if why:
            refused.append(why)
        else:
            applicable.append(obj)
    return applicable, refused


def act_on_each(model_admin, request, objects, *, action: str, service, noun: str, verb: str,
                logged=None, only: str = "", refusal: Callable[[object], str | None] | None = None,
                target: Callable[[object], str] = lambda obj: str(obj.pk),
                confirm: Callable[[list], tuple[str, list[str], str]] | None = None) -> TemplateResponse | None:
    """An admin action's loop: service(obj) for each object, audited as `action`
    and in the object's History (logged(obj), else the verb); then one message
    with how many, and one naming each refusal: the console's rule first
    (refusal(obj): why the action does not apply, checked on the row as it is
    now, so a forged post is refused, and audited as refused), then the
    service's (InvalidState when the row moved on meanwhile: `only` says which
    apply; a capability refused since, a rate limit, a quota).

    confirm: an action that cannot be undone asks first. Unless the post says
    post=yes, the answer is the confirmation page for the objects the rule lets
    through, with confirm(those objects) -> (title, lines saying what will
    happen, the submit button's label); the action returns it."""
    objects = list(objects)
    if confirm is not None and not confirmed(request):
        applicable, refused = refusals_of(objects, refusal or (lambda obj: None))
        if applicable:
            title, lines, submit = confirm(applicable)
            return confirm_page(model_admin, request, applicable, action=request.POST.get("action", ""),
                                title=title, lines=lines, refused=refused, submit=submit)
    done, not_applicable, refused = 0, 0, []
    for obj in objects:
        try:
            with audited(request, action, target=target(obj)):
                why = refusal(obj) if refusal else None
                if why:
                    raise NotApplicable(why)
                service(obj)
            model_admin.log_change(request, obj, logged(obj) if logged else verb)
            done += 1
        except NotApplicable as exc:
            refused.append(exc.detail)
        except InvalidState:
            not_applicable += 1
        except Refused as exc:
            refused.append(f"{target(obj)}: {exc}")
        except liveness.RedisError as exc:  # audited as failed; the next one may still go through
            refused.append(f"{target(obj)}: the liveness store is unavailable ({exc})")
    messages.info(request, f"{done} {noun}(s) {verb}.")
    if not_applicable and only:
        messages.warning(request, f"{not_applicable} {noun}(s) not {verb}: {only}")
    if refused:
        messages.error(request, f"Not {verb}: " + "; ".join(refused[:10]))
    return None
