"""The router as the one console: find a task by id in any region. The page
asks every enabled region (router/services/locate.py), shows where the task is
and which regions did not answer, links to the task in its region's console,
and keeps nothing of the answer but an audit row of who looked for which id."""
from __future__ import annotations

from django import forms
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from console.formatting import exact_time
from project.accounts.audit import audit_record
from router.services.locate import task_locate
from router.services.refusals import RouterError

NOT_A_UUID = ("A task id is a UUID, like 0b6f3c1e-9a4d-4b7e-8f21-5d2c7a90e413 (as the API and the region's "
              "console show it).")


class TaskFinderForm(forms.Form):
    task_id = forms.UUIDField(
        label="Task id", error_messages={"invalid": NOT_A_UUID, "required": NOT_A_UUID,
                                         "null_characters_not_allowed": NOT_A_UUID},
        widget=forms.TextInput(attrs={"size": 40, "maxlength": 64, "autocomplete": "off", "spellcheck": "false",
                                      "placeholder": "0b6f3c1e-9a4d-4b7e-8f21-5d2c7a90e413"}))


def task_finder_urls(model_admin) -> list[URLPattern]:
    """The finder's page, under the region directory (whose view permission it asks)."""
    def view(request):
        return task_finder_view(request, model_admin=model_admin)

    return [path("find-task/", model_admin.admin_site.admin_view(view), name="router_region_find_task")]


def task_finder_view(request, *, model_admin):
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    form = TaskFinderForm(request.GET if "task_id" in request.GET else None)
    location, refusal = None, None
    if form.is_bound and not form.is_valid():
        form.fields["task_id"].widget.attrs.update({"aria-invalid": "true", "aria-describedby": "task-id-errors"})
    if form.is_bound and form.is_valid():
        task_id = form.cleaned_data["task_id"]
        try:
            location = task_locate(task_id=task_id, operator=request.user.get_username())
        except RouterError as exc:
            refusal = exc.detail
            audit_record(action="task.locate", target=str(task_id), request=request, outcome="refused",
                         detail=exc.detail)
        else:
            audit_record(action="task.locate", target=str(task_id), request=request,
                         detail=location.audit_detail())
    found = [{"answer": answer, "created": exact_time(answer.created_at), "finished": exact_time(answer.finished_at)}
             for answer in (location.found if location else ())]
    return TemplateResponse(request, "admin/router/task_finder.html", {
        **model_admin.admin_site.each_context(request), "title": "Find a task in any region",
        "form": form, "location": location, "found": found, "refusal": refusal,
        "opts": model_admin.model._meta,
    })
