"""Tasks as callers see them: submit (one or a batch), list, detail, wait,
cancel, retry; and the region's status."""
from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from project import waiting
from project.accounts.audit import audited
from project.accounts.scopes import scopes_of
from project.exceptions import PayloadTooLarge
from project.jsonsafe import json_problem
from project.schema import PAGE_PARAMETERS, ErrorSerializer, errors, list_filters, paginated
from project.validation import (AGENT_ID_RE, CAPABILITY_RE, BatchItemsField, JsonObjectField, StrictBooleanField,
                                StrictCharField, StrictRegexField, StrictUUIDField)
from regions import selectors
from regions.api.authentication import FORWARDABLE
from regions.api.serializers import TaskOutputSerializer
from regions.api.views.common import Pages, query_filters
from regions.models import Task
from regions.services.callbacks.guard import URL_MAX
from regions.services.tasks.cancel import task_cancel
from regions.services.tasks.retry import task_retry
from regions.services.tasks.submit import ItemRefused, task_submit, task_submit_batch


def _body_within_payload_limit(request) -> None:
    """Before the body is parsed: a submission (or a batch) larger than the
    payload limit and 64 KiB of envelope is refused from its Content-Length."""
    limit = settings.TASK_PAYLOAD_LIMIT_BYTES
    if int(request.META.get("CONTENT_LENGTH") or 0) > limit + 64 * 1024:
        raise PayloadTooLarge(f"request body is larger than the payload limit of {limit} bytes")


READ_ALL, OPERATE = "tasks:read_all", "tasks:operate"


class TaskListSubmitApi(APIView):
    required_scopes = {"GET": ("tasks:read",), "POST": ("tasks:submit",)}
    authentication_classes = FORWARDABLE  # the router forwards submissions here

    @extend_schema_serializer(component_name="TaskSubmit")
    class InputSerializer(serializers.Serializer):
        capability = StrictRegexField(CAPABILITY_RE, error_messages={
            "invalid": "capability must be lower-case letters, digits and _ (at most 64), starting with a letter."
        })
        payload = JsonObjectField(required=False, default=dict)
        priority = serializers.IntegerField(min_value=0, max_value=9, required=False, default=5)
        timeout = serializers.IntegerField(min_value=1, max_value=86_400, required=False)
        max_attempts = serializers.IntegerField(min_value=1, max_value=20, required=False)
        idempotency_key = StrictCharField(max_length=128, required=False)
        target_agent = StrictRegexField(AGENT_ID_RE, required=False, default="")
        callback_url = StrictCharField(
            max_length=URL_MAX, required=False, default="",
            help_text="an http(s) URL the region POSTs the final task to, signed (docs/api.md); its host must be in "
                      "the region's callbacks.allowed_hosts")
        require_agent = StrictBooleanField(
            required=False, default=False,
            help_text="refuse at once (409 no_agent, nothing stored) when no live agent would take the task, "
                      "instead of storing it as waiting")

        def validate_callback_url(self, value: str) -> str:
            if value and (not value.isprintable() or " " in value):
                raise serializers.ValidationError("callback_url must be a URL without spaces or control characters.")
            if value:
                try:
                    parts = urlsplit(value)
                    parts.port  # noqa: B018 (raises on a bad port)
                except ValueError:
                    raise serializers.ValidationError("callback_url is not a valid URL.") from None
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise serializers.ValidationError("callback_url must be an http or https URL with a host.")
                if parts.username is not None or parts.password is not None:
                    raise serializers.ValidationError("callback_url must not carry credentials.")
            return value

        def validate_payload(self, value):
            if not isinstance(value, dict):
                raise serializers.ValidationError("payload must be a JSON object.")
            problem = json_problem(value, root="payload")
            if problem:
                raise serializers.ValidationError(problem)
            return value

    @extend_schema(request=InputSerializer, responses={
        201: TaskOutputSerializer, 200: TaskOutputSerializer, **errors(400, 401, 403, 409, 413, 429, 503),
        403: OpenApiResponse(ErrorSerializer, description=(
            "permission_denied: the capability is not allowed here, or the key lacks the scope; callback_refused: "
            "the callback_url's host is not in callbacks.allowed_hosts (or is an address never called).")),
        409: OpenApiResponse(ErrorSerializer, description=(
            "idempotency_key_reused: the key was used for a different request; no_agent: require_agent was set "
            "and no live agent serves the capability (or the target agent is not online), nothing stored; "
            "callback_secret_missing: a callback_url needs the caller's signing secret first."))})
    def post(self, request):
        _body_within_payload_limit(request)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        sub = task_submit(submitted_by=request.user, **data.validated_data)
        body = TaskOutputSerializer(sub.task).data
        body["created"] = sub.created
        return Response(body, status=status.HTTP_201_CREATED if sub.created else status.HTTP_200_OK)

    @extend_schema(operation_id="tasks_list", parameters=[*list_filters(Task.Status.values), *PAGE_PARAMETERS],
                   responses={200: paginated("PaginatedTaskList", TaskOutputSerializer), **errors(400, 401, 403, 503)})
    def get(self, request):
        qs = selectors.task_list(user=request.user, see_all=READ_ALL in scopes_of(request),
                                 **query_filters(request, Task.Status.values))
        paginator = Pages()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(TaskOutputSerializer(page, many=True).data)


class TaskBatchSubmitApi(APIView):
    """Many submissions in one request: each item is checked and answered as the
    single submission would answer it (201, 200 for an idempotent replay, or its
    4xx), and the accepted ones are stored in one transaction."""

    required_scopes = ("tasks:submit",)
    authentication_classes = FORWARDABLE  # the router forwards batches here

    @extend_schema_serializer(component_name="TaskBatchSubmit")
    class InputSerializer(serializers.Serializer):
        tasks = BatchItemsField()

    @extend_schema(request=InputSerializer, responses={200: dict, **errors(400, 401, 403, 413, 503)})
    def post(self, request):
        _body_within_payload_limit(request)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        answers: list[dict | None] = []
        items, positions = [], []
        for index, raw in enumerate(data.validated_data["tasks"]):
            item = TaskListSubmitApi.InputSerializer(data=raw)
            if not isinstance(raw, dict):
                answers.append({"index": index, "status": 400, "error": "invalid",
                                "detail": "each item must be a JSON object like a single submission"})
            elif not item.is_valid():
                answers.append({"index": index, "status": 400, "error": "invalid", "detail": item.errors})
            else:
                answers.append(None)
                items.append(item.validated_data)
                positions.append(index)
        for index, outcome in zip(positions, task_submit_batch(submitted_by=request.user, items=items)):
            if isinstance(outcome, ItemRefused):
                answers[index] = {"index": index, "status": outcome.status, "error": outcome.code,
                                  "detail": outcome.detail}
            else:
                task = outcome.task
                answers[index] = {"index": index, "status": 201 if outcome.created else 200, "task": {
                    "id": str(task.id), "url": f"{settings.REGION_URL}/api/v1/tasks/{task.id}",
                    "status": task.status, "created": outcome.created}}
        accepted = sum(1 for a in answers if a["status"] in (200, 201))
        return Response({"accepted": accepted, "refused": len(answers) - accepted, "results": answers})


def _task_or_404(request, task_id, *, see_all: str = READ_ALL) -> Task:
    """The task, if the caller submitted it or holds the scope that shows it
    (its own only otherwise: another caller's task is a 404, as an unknown one)."""
    task = selectors.task_get(user=request.user, task_id=task_id, see_all=see_all in scopes_of(request))
    if task is None:
        raise NotFound(f"No task {task_id} in region {settings.REGION_ID}.")
    return task


class WaitSecondsField(serializers.FloatField):
    """Seconds to long-poll, 0 to 60: a number (in a query string, its decimal
    form); never a boolean, NaN or infinity."""

    def __init__(self, *, json_number: bool = False, **kwargs):
        self.json_number = json_number
        super().__init__(min_value=0, max_value=waiting.MAX_WAIT_SECONDS, **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or (self.json_number and not isinstance(data, (int, float))):
            self.fail("invalid")
        return super().to_internal_value(data)


WAIT_HELP = ("seconds (0 to 60) to hold the answer until the task is final (succeeded, failed, cancelled); "
             "answered at once when it is, else with its current state when the time is up")


def _wait_query(request) -> float:
    if "wait" not in request.query_params:
        return 0.0
    field = WaitSecondsField()
    try:
        return field.run_validation(request.query_params["wait"])
    except ValidationError as exc:
        raise ValidationError({"wait": exc.detail}) from exc


class TaskDetailApi(APIView):
    required_scopes = ("tasks:read",)

    @extend_schema(parameters=[OpenApiParameter("wait", {"type": "number", "minimum": 0,
                                                         "maximum": waiting.MAX_WAIT_SECONDS},
                                                required=False, description=WAIT_HELP)],
                   responses={200: TaskOutputSerializer, **errors(400, 401, 403, 404, 503)})
    def get(self, request, task_id):
        wait = _wait_query(request)
        task = _task_or_404(request, task_id)
        if wait and task.status in Task.ACTIVE:
            waiting.wait_ask(request, ids=[task.id], seconds=wait)  # held on the event loop (project/asgi.py)
        return Response(TaskOutputSerializer(task).data)


WAIT_MAX_IDS = 1000


class TaskWaitApi(APIView):
    """Wait for any of several tasks: answered as soon as one of them is final
    (at once when one already is, or one is not found), else at the end of
    `wait` with what is still pending."""

    required_scopes = ("tasks:read",)

    @extend_schema_serializer(component_name="TaskWait")
    class InputSerializer(serializers.Serializer):
        ids = serializers.ListField(child=StrictUUIDField(), min_length=1, max_length=WAIT_MAX_IDS)
        wait = WaitSecondsField(json_number=True, required=False, default=0, help_text=WAIT_HELP)

    @extend_schema_serializer(component_name="TaskWaitResult")
    class OutputSerializer(serializers.Serializer):
        done = TaskOutputSerializer(many=True, help_text="the tasks that are final, in the order asked")
        pending = serializers.ListField(child=serializers.UUIDField(), help_text="ids not final yet")
        missing = serializers.ListField(child=serializers.UUIDField(), help_text="ids with no task of this caller's")

    @extend_schema(operation_id="tasks_wait", request=InputSerializer,
                   responses={200: OutputSerializer, **errors(400, 401, 403, 503)})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        ids = list(dict.fromkeys(str(task_id) for task_id in data.validated_data["ids"]))
        found = selectors.tasks_by_id(user=request.user, ids=ids, see_all=READ_ALL in scopes_of(request))
        done = [found[task_id] for task_id in ids if task_id in found and found[task_id].status not in Task.ACTIVE]
        pending = [task_id for task_id in ids if task_id in found and found[task_id].status in Task.ACTIVE]
        missing = [task_id for task_id in ids if task_id not in found]
        wait = data.validated_data["wait"]
        if wait and not done and not missing:
            waiting.wait_ask(request, ids=pending, seconds=wait)  # held on the event loop (project/asgi.py)
        return Response({"done": TaskOutputSerializer(done, many=True).data, "pending": pending,
                         "missing": missing})


class TaskCancelApi(APIView):
    required_scopes = ("tasks:submit", OPERATE)

    @extend_schema(request=None, responses={200: TaskOutputSerializer, **errors(401, 403, 404, 409, 503)})
    def post(self, request, task_id):
        task = _task_or_404(request, task_id, see_all=OPERATE)
        with audited(request, "task.cancel", target=task_id, refusals=False):
            task = task_cancel(task=task)
        return Response(TaskOutputSerializer(task).data)


class TaskRetryApi(APIView):
    required_scopes = ("tasks:submit", OPERATE)

    @extend_schema(request=None, responses={201: TaskOutputSerializer, **errors(401, 403, 404, 409, 429, 503)})
    def post(self, request, task_id):
        task = _task_or_404(request, task_id, see_all=OPERATE)
        with audited(request, "task.retry", target=task_id, refusals=False):
            task = task_retry(task=task)
        return Response(TaskOutputSerializer(task).data, status=status.HTTP_201_CREATED)


class RegionStatusApi(APIView):
    required_scopes = ("fleet:read",)

    @extend_schema(responses={200: dict, **errors(401, 403, 503)})
    def get(self, request):
        return Response(selectors.region_status())
