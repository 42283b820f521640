"""Workflows as callers see them: submit, list, detail, cancel, retry; scoped
as tasks are (a caller sees and acts on its own; tasks:read_all and
tasks:operate for others')."""
from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from project.accounts.audit import audited
from project.accounts.scopes import scopes_of
from project.jsonsafe import json_problem
from project.schema import PAGE_PARAMETERS, errors, paginated
from project.validation import JsonObjectField, StrictCharField
from regions import selectors
from regions.api.serializers import WorkflowOutputSerializer
from regions.api.views.common import Pages, query_filters
from regions.api.views.tasks import OPERATE, READ_ALL, TaskListSubmitApi, _body_within_payload_limit
from regions.models import Workflow
from regions.services.workflows.cancel import workflow_cancel
from regions.services.workflows.retry import workflow_retry
from regions.services.workflows.submit import MAX_GROUP, MAX_STEPS, workflow_submit

TASK_FIELDS = ("capability", "payload", "priority", "timeout", "max_attempts")


class StepsField(serializers.ListField):
    """1 to MAX_STEPS steps, each a task ({"capability", "payload", "priority",
    "timeout", "max_attempts"}, checked as a submission's fields are) or a group
    ({"group": [task, ...]}, 1 to MAX_GROUP members). An error names the step
    and field: steps[2].group[0].capability."""

    def __init__(self, **kwargs):
        super().__init__(child=JsonObjectField(), min_length=1, max_length=MAX_STEPS, **kwargs)

    def to_internal_value(self, data):
        steps = super().to_internal_value(data)
        problems: list[str] = []
        checked = []
        for index, raw in enumerate(steps):
            where = f"steps[{index}]"
            if "group" in raw:
                extra = set(raw) - {"group"}
                members = raw["group"]
                if extra:
                    problems.append(f"{where}: a group has only the field group, not {', '.join(sorted(extra))}")
                elif not isinstance(members, list) or not 1 <= len(members) <= MAX_GROUP:
                    problems.append(f"{where}.group: must be a list of 1 to {MAX_GROUP} tasks")
                else:
                    checked.append({"group": [self._task(m, f"{where}.group[{n}]", problems)
                                              for n, m in enumerate(members)]})
            else:
                checked.append(self._task(raw, where, problems))
        if problems:
            raise serializers.ValidationError(problems[:20])
        return checked

    @staticmethod
    def _task(raw, where: str, problems: list[str]) -> dict:
        if not isinstance(raw, dict):
            problems.append(f"{where}: must be a JSON object like a task submission")
            return {}
        extra = set(raw) - set(TASK_FIELDS)
        if extra:
            problems.append(f"{where}: unknown field(s) {', '.join(sorted(extra))}; a step takes "
                            f"{', '.join(TASK_FIELDS)}")
            return {}
        item = TaskListSubmitApi.InputSerializer(data=raw)
        if not item.is_valid():
            for field, messages in item.errors.items():
                for message in messages if isinstance(messages, list) else [messages]:
                    problems.append(f"{where}.{field}: {message}")
            return {}
        data = item.validated_data
        return {field: data[field] for field in TASK_FIELDS if field in data}


class WorkflowListSubmitApi(APIView):
    required_scopes = {"GET": ("tasks:read",), "POST": ("tasks:submit",)}

    @extend_schema_serializer(component_name="WorkflowSubmit")
    class InputSerializer(serializers.Serializer):
        steps = StepsField(help_text=f"1 to {MAX_STEPS} steps in order; each a task (capability, payload, priority, "
                                     f"timeout, max_attempts) or a group {{\"group\": [task, ...]}} of 1 to "
                                     f"{MAX_GROUP} tasks run in parallel")
        idempotency_key = StrictCharField(max_length=128, required=False)

        def validate_steps(self, value):
            problem = json_problem(value, root="steps")
            if problem:
                raise serializers.ValidationError(problem)
            return value

    @extend_schema(operation_id="workflows_create", request=InputSerializer, responses={
        201: WorkflowOutputSerializer, 200: WorkflowOutputSerializer, **errors(400, 401, 403, 409, 413, 429, 503)})
    def post(self, request):
        _body_within_payload_limit(request)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        sub = workflow_submit(submitted_by=request.user, **data.validated_data)
        workflow = selectors.workflow_get(user=request.user, workflow_id=sub.workflow.id, see_all=True)
        body = WorkflowOutputSerializer(workflow).data
        body["created"] = sub.created
        return Response(body, status=status.HTTP_201_CREATED if sub.created else status.HTTP_200_OK)

    @extend_schema(operation_id="workflows_list",
                   parameters=[OpenApiParameter("status", str, enum=Workflow.Status.values), *PAGE_PARAMETERS],
                   responses={200: paginated("PaginatedWorkflowList", WorkflowOutputSerializer),
                              **errors(400, 401, 403, 503)})
    def get(self, request):
        qs = selectors.workflow_list(user=request.user, see_all=READ_ALL in scopes_of(request),
                                     status=query_filters(request, Workflow.Status.values)["status"])
        paginator = Pages()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(WorkflowOutputSerializer(page, many=True).data)


def _workflow_or_404(request, workflow_id, *, see_all: str = READ_ALL) -> Workflow:
    workflow = selectors.workflow_get(user=request.user, workflow_id=workflow_id,
                                      see_all=see_all in scopes_of(request))
    if workflow is None:
        raise NotFound(f"No workflow {workflow_id} in region {settings.REGION_ID}.")
    return workflow


def _fresh(workflow: Workflow) -> dict:
    return WorkflowOutputSerializer(selectors.workflow_get(user=None, workflow_id=workflow.id, see_all=True)).data


class WorkflowDetailApi(APIView):
    required_scopes = ("tasks:read",)

    @extend_schema(operation_id="workflows_retrieve",
                   responses={200: WorkflowOutputSerializer, **errors(400, 401, 403, 404, 503)})
    def get(self, request, workflow_id):
        return Response(WorkflowOutputSerializer(_workflow_or_404(request, workflow_id)).data)


class WorkflowCancelApi(APIView):
    required_scopes = ("tasks:submit", OPERATE)

    @extend_schema(request=None, responses={200: WorkflowOutputSerializer, **errors(401, 403, 404, 409, 503)})
    def post(self, request, workflow_id):
        workflow = _workflow_or_404(request, workflow_id, see_all=OPERATE)
        with audited(request, "workflow.cancel", target=workflow_id, refusals=False):
            workflow = workflow_cancel(workflow=workflow)
        return Response(_fresh(workflow))


class WorkflowRetryApi(APIView):
    required_scopes = ("tasks:submit", OPERATE)

    @extend_schema(request=None, responses={201: WorkflowOutputSerializer,
                                            **errors(401, 403, 404, 409, 429, 503)})
    def post(self, request, workflow_id):
        workflow = _workflow_or_404(request, workflow_id, see_all=OPERATE)
        with audited(request, "workflow.retry", target=workflow_id, refusals=False):
            workflow = workflow_retry(workflow=workflow)
        return Response(_fresh(workflow), status=status.HTTP_201_CREATED)
