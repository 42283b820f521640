"""Regional orchestrator API: thin views over regions.services."""
from __future__ import annotations

import json

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from project.pagination import StrictCursorPagination
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from project import waiting
from project.accounts.tokens import BEARER_CHALLENGE, bearer_from_header
from project.exceptions import PayloadTooLarge, Refused, ServiceUnavailable
from project.schema import AGENT_TOKEN_PARAMETER, PAGE_PARAMETERS, ErrorSerializer, errors, list_filters, paginated
from project.jsonsafe import json_problem
from wire.endpoints import AGENT_TOKEN_HEADER, MAX_BUSY
from wire.protocol import OUTCOME_KINDS
from regions import selectors
from project.validation import (AGENT_ID_RE, CAPABILITY_RE, AgentIdentitySerializer, JsonObjectField,
                                StrictBooleanField, StrictCharField, StrictRegexField, StrictUUIDField)
from regions.api.authentication import AgentNotBlocklisted, AgentTokenAuthentication, RegistrationTokenAuthentication
from regions.api.serializers import AgentOutputSerializer, TaskOutputSerializer
from regions.models import Agent, Task
from regions.services import liveness
from regions.services.config import config_current
from regions.services.handlers import schema_problem
from regions.services.deadletters import dead_letter_report
from regions.services.reports import OutcomeInvalid, outcome_clean, report_apply
from regions.services.agents.heartbeat import fleet_size, heartbeat_record
from regions.services.agents.registry import agent_deregister, agent_queues, agent_register, agent_set_desired
from regions.services.tasks.cancel import task_cancel
from regions.services.tasks.claim import task_claim
from regions.services.tasks.retry import task_retry
from regions.services.tasks.submit import ItemRefused, task_submit, task_submit_batch

LIVENESS_DOWN = "liveness store (Redis) unavailable; retry shortly"


# --- agents ------------------------------------------------------------------

class HandlerDeclarationSerializer(serializers.Serializer):
    version = StrictCharField(max_length=50, required=False, default="", allow_blank=True)
    timeout = serializers.IntegerField(min_value=1, max_value=86_400, required=False, allow_null=True, default=None)
    payload_schema = JsonObjectField(required=False, allow_null=True, default=None)

    def validate_payload_schema(self, value):
        problem = None if value is None else schema_problem(value)
        if problem:
            raise ValidationError(f"payload_schema {problem}")
        return value


class AgentRegisterApi(APIView):
    authentication_classes = [RegistrationTokenAuthentication]

    @extend_schema_serializer(component_name="AgentRegistration")
    class InputSerializer(AgentIdentitySerializer):
        version = StrictCharField(max_length=50, required=False, default="")
        hostname = StrictCharField(max_length=255, required=False, default="")
        kind = serializers.ChoiceField(choices=["celery", "http"], required=False, default="celery")
        concurrency = serializers.IntegerField(min_value=1, max_value=1024, required=False, default=1)
        handlers = serializers.DictField(child=HandlerDeclarationSerializer(), required=False, default=dict,
                                         help_text="what each capability's handler declares, by capability")

        def validate(self, attrs):
            unknown = sorted(set(attrs["handlers"]) - set(attrs["capabilities"]))
            if unknown:
                raise ValidationError({"handlers": [f"declared for capabilities not served: {', '.join(unknown)}"]})
            return attrs

    @extend_schema(request=InputSerializer, parameters=[AGENT_TOKEN_PARAMETER],
                   responses={201: dict, **errors(400, 401, 403, 409, 503)})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            reg = agent_register(**data.validated_data, current_token=request.headers.get(AGENT_TOKEN_HEADER))
        except liveness.RedisError as exc:
            raise ServiceUnavailable(LIVENESS_DOWN) from exc  # with Retry-After, as every 503
        try:  # what the heartbeat replies will say for this fleet (the chatter budget)
            timing = config_current().heartbeat_timing(fleet_size())
        except liveness.RedisError:
            timing = config_current().heartbeat_timing(0)
        return Response({
            "agent_id": reg.agent.agent_id,
            "token": reg.token,
            "report_key": reg.report_key,
            "region_id": settings.REGION_ID,
            "regional_orchestrator_url": settings.REGION_URL,
            "broker_url": settings.AGENT_BROKER_URL,
            "queues": agent_queues(reg.agent),
            "heartbeat_interval": timing.interval,
            "heartbeat_ttl": timing.ttl,
        }, status=status.HTTP_201_CREATED)


def _json_error(code: str, detail: str, status_code: int, *, challenge: bool = False) -> JsonResponse:
    response = JsonResponse({"error": code, "detail": detail}, status=status_code)
    if challenge:
        response["WWW-Authenticate"] = BEARER_CHALLENGE
    return response


HEARTBEAT_BODY_MAX_BYTES = 4096


class HeartbeatBodyInvalid(ValueError):
    pass


def heartbeat_busy(raw: bytes) -> int:
    """The slots in use an agent reports: an empty body is 0; otherwise a JSON
    object whose optional `busy` is an integer from 0 to MAX_BUSY. Anything else
    (1e400, Infinity, true, "3", deep nesting, a huge body) is HeartbeatBodyInvalid.
    The hot path: one json.loads, no walk (only `busy` is kept, so nothing deep
    outlives the parse)."""
    if not raw:
        return 0
    if len(raw) > HEARTBEAT_BODY_MAX_BYTES:
        raise HeartbeatBodyInvalid(f"Body is over {HEARTBEAT_BODY_MAX_BYTES} bytes.")
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity, too deep
        raise HeartbeatBodyInvalid('Body must be a JSON object like {"busy": 0}.') from None
    busy = body.get("busy", 0) if isinstance(body, dict) else None
    if type(busy) is not int or not 0 <= busy <= MAX_BUSY:
        raise HeartbeatBodyInvalid(f'Body must be a JSON object like {{"busy": 0}}; busy an integer from 0 to '
                                   f'{MAX_BUSY}.')
    return busy


def _no_constant(name: str):
    raise ValueError(name)


@csrf_exempt
@require_POST
def agent_heartbeat_view(request, agent_id: str):
    """The hot path: a plain Django view, one Redis round trip, no ORM."""
    try:
        busy = heartbeat_busy(request.body)
    except HeartbeatBodyInvalid as exc:
        return _json_error("invalid", str(exc), 400)
    try:
        raw_token = bearer_from_header(request.META.get("HTTP_AUTHORIZATION"))
        reply = heartbeat_record(agent_id=agent_id, raw_token=raw_token, busy=busy)
    except Refused as exc:  # the agent's credential
        return _json_error(exc.code, exc.detail, exc.status, challenge=exc.status == 401)
    except liveness.RedisError:
        response = _json_error("unavailable", LIVENESS_DOWN, 503)
        response["Retry-After"] = "2"
        return response
    return JsonResponse(reply)


class AgentDeregisterApi(APIView):
    authentication_classes = [AgentTokenAuthentication]

    @extend_schema(request=None, responses={200: dict, **errors(401, 403, 404, 503)})
    def post(self, request, agent_id: str):
        try:
            agent_deregister(agent_id=request.user.agent_id)
        except liveness.RedisError as exc:
            raise ServiceUnavailable(LIVENESS_DOWN) from exc
        return Response({"agent_id": agent_id, "status": Agent.Status.STOPPED})


class _ListFilters(serializers.Serializer):
    """Query parameters of the list endpoints: checked before they reach a query
    (a NUL in a filter is a 400, not a database error)."""

    capability = serializers.RegexField(CAPABILITY_RE, required=False, error_messages={
        "invalid": "capability must be lower-case letters, digits and _ (at most 64), starting with a letter."})
    status = serializers.CharField(required=False, max_length=16)

    def __init__(self, *args, statuses, **kwargs):
        super().__init__(*args, **kwargs)
        self.statuses = statuses

    def validate_status(self, value):
        if value not in self.statuses:
            raise serializers.ValidationError(f"one of {', '.join(self.statuses)}")
        return value


def _list_filters(request, statuses) -> dict:
    data = _ListFilters(data={k: request.query_params[k] for k in ("capability", "status")
                              if k in request.query_params}, statuses=statuses)
    data.is_valid(raise_exception=True)
    return {"status": data.validated_data.get("status"), "capability": data.validated_data.get("capability")}


class AgentListApi(APIView):
    @extend_schema(operation_id="agents_list", parameters=[*list_filters(Agent.Status.values), *PAGE_PARAMETERS],
                   responses={200: paginated("PaginatedAgentList", AgentOutputSerializer), **errors(400, 401, 503)})
    def get(self, request):
        qs = selectors.agent_list(**_list_filters(request, Agent.Status.values))
        paginator = _AgentPages()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(AgentOutputSerializer(page, many=True).data)


class AgentDetailApi(APIView):
    @extend_schema(responses={200: AgentOutputSerializer, **errors(401, 404, 503)})
    def get(self, request, agent_id: str):
        agent = Agent.objects.filter(agent_id=agent_id).first()
        if agent is None:
            raise NotFound(f"No agent {agent_id} in region {settings.REGION_ID}.")
        data = AgentOutputSerializer(agent).data
        data.update(selectors.agent_live_view(agent))
        data["running_tasks"] = selectors.agent_running_tasks(agent_id=agent_id)
        return Response(data)


def _desired_api(desired: str, name: str):
    class AgentDesiredApi(APIView):
        permission_classes = [IsAdminUser]

        @extend_schema(request=None, responses={200: AgentOutputSerializer, **errors(401, 403, 404, 503)},
                       operation_id=f"agent_{name}")
        def post(self, request, agent_id: str):
            try:
                agent = agent_set_desired(agent_id=agent_id, desired=desired)
            except liveness.RedisError as exc:
                raise ServiceUnavailable(LIVENESS_DOWN) from exc
            return Response(AgentOutputSerializer(agent).data)

    AgentDesiredApi.__name__ = f"Agent{name.capitalize()}Api"
    return AgentDesiredApi


AgentDrainApi = _desired_api(Agent.Desired.DRAINING, "drain")
AgentCordonApi = _desired_api(Agent.Desired.CORDONED, "cordon")
AgentUncordonApi = _desired_api(Agent.Desired.ACTIVE, "uncordon")
AgentRevokeApi = _desired_api(Agent.Desired.STOPPED, "revoke")


# --- tasks -------------------------------------------------------------------

class _Pages(StrictCursorPagination):
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000
    ordering = "-created_at"


class _AgentPages(_Pages):
    ordering = "agent_id"


class TaskListSubmitApi(APIView):
    @extend_schema_serializer(component_name="TaskSubmit")
    class InputSerializer(serializers.Serializer):
        capability = serializers.RegexField(CAPABILITY_RE, error_messages={
            "invalid": "capability must be lower-case letters, digits and _ (at most 64), starting with a letter."
        })
        payload = JsonObjectField(required=False, default=dict)
        priority = serializers.IntegerField(min_value=0, max_value=9, required=False, default=5)
        timeout = serializers.IntegerField(min_value=1, max_value=86_400, required=False)
        max_attempts = serializers.IntegerField(min_value=1, max_value=20, required=False)
        idempotency_key = StrictCharField(max_length=128, required=False)
        target_agent = StrictRegexField(AGENT_ID_RE, required=False, default="")
        require_agent = StrictBooleanField(
            required=False, default=False,
            help_text="refuse at once (409 no_agent, nothing stored) when no live agent would take the task, "
                      "instead of storing it as waiting")

        def validate_payload(self, value):
            if not isinstance(value, dict):
                raise serializers.ValidationError("payload must be a JSON object.")
            problem = json_problem(value, root="payload")
            if problem:
                raise serializers.ValidationError(problem)
            return value

    @extend_schema(request=InputSerializer, responses={
        201: TaskOutputSerializer, 200: TaskOutputSerializer, **errors(400, 401, 403, 409, 413, 429, 503),
        409: OpenApiResponse(ErrorSerializer, description=(
            "idempotency_key_reused: the key was used for a different request; no_agent: require_agent was set "
            "and no live agent serves the capability (or the target agent is not online), nothing stored."))})
    def post(self, request):
        limit = settings.TASK_PAYLOAD_LIMIT_BYTES
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit + 64 * 1024:
            raise PayloadTooLarge(f"request body is larger than the payload limit of {limit} bytes")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        sub = task_submit(submitted_by=request.user, **data.validated_data)
        body = TaskOutputSerializer(sub.task).data
        body["created"] = sub.created
        return Response(body, status=status.HTTP_201_CREATED if sub.created else status.HTTP_200_OK)

    @extend_schema(operation_id="tasks_list", parameters=[*list_filters(Task.Status.values), *PAGE_PARAMETERS],
                   responses={200: paginated("PaginatedTaskList", TaskOutputSerializer), **errors(400, 401, 503)})
    def get(self, request):
        qs = selectors.task_list(user=request.user, **_list_filters(request, Task.Status.values))
        paginator = _Pages()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(TaskOutputSerializer(page, many=True).data)


BATCH_MAX_ITEMS = 500


class TaskBatchSubmitApi(APIView):
    """Many submissions in one request: each item is checked and answered as the
    single submission would answer it (201, 200 for an idempotent replay, or its
    4xx), and the accepted ones are stored in one transaction."""

    @extend_schema_serializer(component_name="TaskBatchSubmit")
    class InputSerializer(serializers.Serializer):
        tasks = serializers.ListField(child=serializers.JSONField(), min_length=1, max_length=BATCH_MAX_ITEMS)

    @extend_schema(request=InputSerializer, responses={200: dict, **errors(400, 401, 413, 503)})
    def post(self, request):
        limit = settings.TASK_PAYLOAD_LIMIT_BYTES
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit + 64 * 1024:
            raise PayloadTooLarge(f"request body is larger than the payload limit of {limit} bytes")
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


def _task_or_404(request, task_id) -> Task:
    task = selectors.task_get(user=request.user, task_id=task_id)
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
    @extend_schema(parameters=[OpenApiParameter("wait", {"type": "number", "minimum": 0,
                                                         "maximum": waiting.MAX_WAIT_SECONDS},
                                                required=False, description=WAIT_HELP)],
                   responses={200: TaskOutputSerializer, **errors(400, 401, 404, 503)})
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
                   responses={200: OutputSerializer, **errors(400, 401, 503)})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        ids = list(dict.fromkeys(str(task_id) for task_id in data.validated_data["ids"]))
        found = {str(task.id): task for task in selectors.task_list(user=request.user).filter(id__in=ids)}
        done = [found[task_id] for task_id in ids if task_id in found and found[task_id].status not in Task.ACTIVE]
        pending = [task_id for task_id in ids if task_id in found and found[task_id].status in Task.ACTIVE]
        missing = [task_id for task_id in ids if task_id not in found]
        wait = data.validated_data["wait"]
        if wait and not done and not missing:
            waiting.wait_ask(request, ids=pending, seconds=wait)  # held on the event loop (project/asgi.py)
        return Response({"done": TaskOutputSerializer(done, many=True).data, "pending": pending,
                         "missing": missing})


class TaskCancelApi(APIView):
    @extend_schema(request=None, responses={200: TaskOutputSerializer, **errors(401, 404, 409, 503)})
    def post(self, request, task_id):
        task = _task_or_404(request, task_id)
        task = task_cancel(task=task)
        return Response(TaskOutputSerializer(task).data)


class TaskRetryApi(APIView):
    @extend_schema(request=None, responses={201: TaskOutputSerializer, **errors(401, 403, 404, 409, 429, 503)})
    def post(self, request, task_id):
        task = _task_or_404(request, task_id)
        task = task_retry(task=task)
        return Response(TaskOutputSerializer(task).data, status=status.HTTP_201_CREATED)


class RegionStatusApi(APIView):
    @extend_schema(responses={200: dict, **errors(401, 503)})
    def get(self, request):
        return Response(selectors.region_status())


# --- the agent's side of an attempt: claim, then report -----------------------------

class _AgentAttemptApi(APIView):
    """Called by an agent with its own token, for an attempt it received."""

    authentication_classes = [AgentTokenAuthentication]
    permission_classes = [IsAuthenticated, AgentNotBlocklisted]


class TaskClaimApi(_AgentAttemptApi):
    @extend_schema_serializer(component_name="TaskClaim")
    class InputSerializer(serializers.Serializer):
        task_id = StrictUUIDField()
        attempt = serializers.IntegerField(min_value=1, max_value=1000)
        claim_id = StrictRegexField(r"^[A-Za-z0-9_.:-]{1,64}$", required=False, default="")

    @extend_schema(request=InputSerializer, responses={200: dict, **errors(400, 401, 403, 404, 409, 503)})
    def post(self, request, agent_id: str):
        agent = request.user
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        claim = task_claim(task_id=str(data.validated_data["task_id"]),
                           attempt=data.validated_data["attempt"], agent_id=agent.agent_id,
                           capabilities=agent.capabilities, claim_id=data.validated_data["claim_id"])
        if not claim.run:
            return Response({"error": "not_current", "detail": claim.reason, "run": False},
                            status=status.HTTP_409_CONFLICT)
        return Response({"run": True, "capability": claim.capability, "payload": claim.payload,
                         "timeout": claim.timeout, "secrets": claim.secrets})


class TaskReportApi(_AgentAttemptApi):
    @extend_schema_serializer(component_name="TaskReport")
    class InputSerializer(serializers.Serializer):
        task_id = StrictUUIDField()
        attempt = serializers.IntegerField(min_value=1, max_value=1000)
        kind = serializers.ChoiceField(choices=OUTCOME_KINDS)
        body = serializers.DictField()

        def validate(self, attrs):
            try:
                attrs["body"] = outcome_clean(kind=attrs["kind"], body=attrs["body"])
            except OutcomeInvalid as exc:
                raise ValidationError({"body": str(exc)}) from exc
            return attrs

    @extend_schema(request=InputSerializer, responses={200: dict, **errors(400, 401, 403, 404, 413, 503)})
    def post(self, request, agent_id: str):
        agent = request.user
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        recorded = report_apply(agent_id=agent.agent_id, capabilities=agent.capabilities,
                                task_id=str(data.validated_data["task_id"]), attempt=data.validated_data["attempt"],
                                kind=data.validated_data["kind"], body=data.validated_data["body"])
        return Response({"recorded": recorded})


class AgentDeadLetterApi(_AgentAttemptApi):
    """An agent reports a message it dropped (it cannot touch any task: the
    record is only kept, bounded, for the operator)."""

    @extend_schema_serializer(component_name="DeadLetterReport")
    class InputSerializer(serializers.Serializer):
        queue = StrictCharField(max_length=200, allow_blank=True, required=False, default="")
        reason = StrictCharField(max_length=500)
        task_name = StrictCharField(max_length=200, allow_blank=True, required=False, default="")
        task_id = StrictCharField(max_length=64, allow_blank=True, required=False, default="")
        excerpt = StrictCharField(max_length=4000, allow_blank=True, required=False, default="",
                                        trim_whitespace=False)

    @extend_schema(request=InputSerializer, responses={201: dict, **errors(400, 401, 403, 404, 429, 503)})
    def post(self, request, agent_id: str):
        agent = request.user
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        letter = dead_letter_report(agent_id=agent.agent_id, **data.validated_data)
        return Response({"recorded": letter is not None}, status=status.HTTP_201_CREATED)
