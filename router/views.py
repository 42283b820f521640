"""Router API: the article's two endpoints, routing and forwarding. Thin views: what the
services refuse (router.services.refusals.RouterError) is answered by project.exceptions.api_exception_handler."""
from __future__ import annotations

import re

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from project.accounts.scopes import scopes_of
from project.schema import FORWARDED, errors
from project.validation import CAPABILITY_RE, LABEL_RE, AgentIdentitySerializer
from router import inputs, selectors
from router.services.forwarding import Caller, task_batch_forward, task_forward, task_redirect
from router.services.placement import agent_place
from router.services.routing import route
from router.services.summaries import summary_ingest
from router.authentication import RegionTokenAuthentication, RegistrationTokenAuthentication
from wire.endpoints import REGISTER, REGISTRATION_GRANT


def _client_ip(request) -> str | None:
    if settings.ROUTER_TRUST_FORWARDED_FOR and request.META.get("HTTP_X_FORWARDED_FOR"):
        return request.META["HTTP_X_FORWARDED_FOR"].split(",")[0].strip()
    return request.META.get("REMOTE_ADDR")


def _caller(request) -> Caller:
    """Who the router vouches for when it forwards (never the credential itself)."""
    return Caller(username=request.user.get_username(), scopes=scopes_of(request))


class RegisterAgentApi(APIView):
    required_scopes = ()  # not an API key: the registration token is the permission
    """Discovery: which region should this agent join?"""

    authentication_classes = [RegistrationTokenAuthentication]

    @extend_schema_serializer(component_name="AgentPlacement")
    class InputSerializer(AgentIdentitySerializer):
        region = serializers.SlugField(max_length=64, required=False, help_text="explicit region hint")

    @extend_schema(request=InputSerializer, responses={200: dict, **errors(400, 401, 403, 429, 503)})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        agent_id = data.validated_data["agent_id"]
        placement = agent_place(token=request.auth, agent_id=agent_id,
                                capabilities=data.validated_data["capabilities"],
                                hint=data.validated_data.get("region"), client_ip=_client_ip(request))
        region, grant = placement.region, placement.grant
        return Response({
            "message": f"Agent {agent_id} should join region {region.region_id}.",
            "agent_id": agent_id,
            "region_id": region.region_id,
            "regional_orchestrator_url": region.orchestrator_url,
            "register_url": f"{region.orchestrator_url}{REGISTER.url()}",
            **({REGISTRATION_GRANT: grant} if grant else {}),
        })


class UpdateRegionalStatusApi(APIView):
    authentication_classes = [RegionTokenAuthentication]
    required_scopes = ()  # not an API key: the region acts as itself

    @extend_schema(request=inputs.SummaryInputSerializer, responses={200: dict, **errors(400, 401, 403, 409, 503)})
    def post(self, request):
        region = summary_ingest(region=request.auth, summary=request.data)
        return Response({"region_id": region.region_id, "accepted": True,
                         "received_at": region.received_at.isoformat()})


ROUTE_SKIPPED_SHOWN = 20
ROUTE_COUNT_DEFAULT, ROUTE_COUNT_MAX = 3, 50
_CAPABILITY = re.compile(CAPABILITY_RE.removeprefix("^").removesuffix("$")).fullmatch
_LABEL = re.compile(LABEL_RE.removeprefix("^").removesuffix("$")).fullmatch
_COUNT = re.compile(r"[1-9][0-9]?").fullmatch


def _route_query_plain(params) -> dict | None:
    """A well-formed route query as RouteApi.QuerySerializer reads it (the last
    value of each field), without running the serializer: it deep-copies its
    fields on every request, an eighth of a route's time at the router. None:
    anything else, which the serializer reads (and answers with its 400)."""
    capability, residency, count = params.get("capability"), params.get("residency"), params.get("count")
    if capability is None or not _CAPABILITY(capability) or (residency is not None and not _LABEL(residency)):
        return None
    if count is not None and not (_COUNT(count) and int(count) <= ROUTE_COUNT_MAX):
        return None
    query = {"capability": capability, "count": int(count) if count is not None else ROUTE_COUNT_DEFAULT}
    if residency is not None:
        query["residency"] = residency
    return query


class RouteApi(APIView):
    required_scopes = ("tasks:submit", "fleet:read")

    @extend_schema_serializer(component_name="RouteQuery")
    class QuerySerializer(serializers.Serializer):
        capability = serializers.RegexField(CAPABILITY_RE)
        residency = serializers.RegexField(LABEL_RE, required=False)
        count = serializers.IntegerField(min_value=1, max_value=ROUTE_COUNT_MAX, required=False,
                                         default=ROUTE_COUNT_DEFAULT)

    @extend_schema(parameters=[QuerySerializer], responses={200: dict, **errors(400, 401, 403, 503)})
    def get(self, request):
        query = _route_query_plain(request.query_params)
        if query is None:
            serializer = self.QuerySerializer(data=request.query_params)
            serializer.is_valid(raise_exception=True)
            query = serializer.validated_data
        answer = route(**query)
        # Why the other regions were passed over, for the first ROUTE_SKIPPED_SHOWN of them
        # (by region id) and how many there were: at 500 regions the full list was
        # most of the answer's bytes and of its time.
        shown, total = answer.skipped_first(ROUTE_SKIPPED_SHOWN)
        return Response({"capability": query["capability"], "regions": answer.regions,
                         "skipped": shown, "skipped_total": total})


class TaskForwardApi(APIView):
    """Pick a region and submit there; the payload passes through, never stored."""

    required_scopes = ("tasks:submit",)

    @extend_schema_serializer(component_name="TaskForward")
    class InputSerializer(inputs.TaskHeadSerializer):
        """What the router reads of the body (inputs.task_forward_parse); the rest passes through."""

    @extend_schema(request=InputSerializer, responses=FORWARDED)
    def post(self, request):
        head = inputs.task_forward_parse(request.data)  # any JSON: a 400 naming the problem, or the head
        code, body = task_forward(**head, body=request.body, caller=_caller(request))
        return Response(body, status=code)


_BATCH_FORWARD = {"type": "object", "required": ["region_id", "regional_orchestrator_url", "batch"], "properties": {
    "region_id": {"type": "string"}, "regional_orchestrator_url": {"type": "string"},
    "batch": {"type": "object", "description": "the region's answer: accepted, refused and each item's result, "
                                               "or why it refused the whole batch"}}}
_BATCH_FORWARD_OR_ERROR = {"anyOf": [{"$ref": "#/components/schemas/Error"}, _BATCH_FORWARD]}


class TaskBatchForwardApi(APIView):
    """A batch of submissions forwarded whole to ONE region serving every capability in it."""

    required_scopes = ("tasks:submit",)

    @extend_schema_serializer(component_name="TaskBatchForward")
    class InputSerializer(inputs.TaskBatchHeadSerializer):
        """What the router reads of the body (inputs.task_batch_forward_parse); the items pass through."""

    @extend_schema(request=InputSerializer, responses={
        200: OpenApiResponse(_BATCH_FORWARD, description="The region answered the batch (each item in `results`)."),
        **{code: OpenApiResponse(_BATCH_FORWARD_OR_ERROR, description="Refused here, or by the region (then its "
                                 "answer is in `batch`).") for code in (400, 401, 403, 413, 429)},
        **errors(503, 504)})
    def post(self, request):
        head = inputs.task_batch_forward_parse(request.data)
        code, body = task_batch_forward(**head, body=request.body, caller=_caller(request))
        return Response(body, status=code)


_REDIRECT = OpenApiResponse(
    {"type": "object", "properties": {"region_id": {"type": "string"}, "location": {"type": "string"}}},
    description="Temporary Redirect to the owning region (same method, path and query, without `region`): "
                "the router never carries a task's data. Send the credential again there.")
_LOCATION = OpenApiParameter("Location", str, OpenApiParameter.HEADER, required=True, response=[307],
                             description="the region's URL for this request")
_REGION_PARAMETER = OpenApiParameter(
    "region", str, OpenApiParameter.QUERY, required=True, pattern=inputs.REGION_ID_RE.replace("\\Z", "$"),
    description="the region that owns the task (a task reference is <region_id>/<task id>)")


class TaskRedirectApi(APIView):
    """A task's reads and actions, answered by its region: 307 there, never proxied."""

    def _redirect(self, request) -> Response:
        region_id = inputs.task_redirect_region(request.query_params)
        query = request.query_params.copy()
        query.pop("region", None)
        location = task_redirect(region_id=region_id, path=request.path_info,
                                 query=query.urlencode())
        return Response({"region_id": region_id, "location": location}, status=status.HTTP_307_TEMPORARY_REDIRECT,
                        headers={"Location": location})


class TaskDetailRedirectApi(TaskRedirectApi):
    required_scopes = ("tasks:read",)

    @extend_schema(operation_id="task_detail_redirect", parameters=[_REGION_PARAMETER, OpenApiParameter(
        "wait", int, OpenApiParameter.QUERY, required=False, description="passed on to the region (long-poll)"),
        _LOCATION],
        responses={307: _REDIRECT, **errors(400, 401, 403, 404)})
    def get(self, request, task_id):
        return self._redirect(request)


class TaskCancelRedirectApi(TaskRedirectApi):
    required_scopes = ("tasks:submit", "tasks:operate")

    @extend_schema(operation_id="task_cancel_redirect", request=None, parameters=[_REGION_PARAMETER, _LOCATION],
                   responses={307: _REDIRECT, **errors(400, 401, 403, 404)})
    def post(self, request, task_id):
        return self._redirect(request)


class TaskRetryRedirectApi(TaskRedirectApi):
    required_scopes = ("tasks:submit", "tasks:operate")

    @extend_schema(operation_id="task_retry_redirect", request=None, parameters=[_REGION_PARAMETER, _LOCATION],
                   responses={307: _REDIRECT, **errors(400, 401, 403, 404)})
    def post(self, request, task_id):
        return self._redirect(request)


class TaskWaitRedirectApi(TaskRedirectApi):
    required_scopes = ("tasks:read",)

    @extend_schema(operation_id="task_wait_redirect", request={"application/json": OpenApiTypes.OBJECT},
                   parameters=[_REGION_PARAMETER, _LOCATION], responses={307: _REDIRECT, **errors(400, 401, 403, 404)})
    def post(self, request):
        return self._redirect(request)


class RegionListApi(APIView):
    required_scopes = ("fleet:read",)

    @extend_schema(responses={200: dict, **errors(401, 403, 503)})
    def get(self, request):
        return Response({"regions": [{
            "region_id": r.region_id, "orchestrator_url": r.orchestrator_url, "labels": r.labels,
            "available_agents": r.available_agents, "capabilities": r.capabilities,
            "last_updated": r.last_updated, "received_at": r.received_at,
            "config_version": r.config_version, "config_since": r.config_since,
            **selectors.region_health(r),
        } for r in selectors.region_list()]}, status=status.HTTP_200_OK)


class ConfigDriftApi(APIView):
    """Which regions run which configuration commit, and since when."""

    required_scopes = ("fleet:read",)

    @extend_schema(responses={200: dict, **errors(401, 403, 503)})
    def get(self, request):
        return Response(selectors.config_drift())
