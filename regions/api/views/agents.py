"""The agent's own calls: register, heartbeat (the hot path), deregister."""
from __future__ import annotations

import json

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from project.accounts.tokens import BEARER_CHALLENGE, bearer_from_header
from project.exceptions import Refused, ServiceUnavailable
from project.schema import AGENT_TOKEN_PARAMETER, errors
from project.validation import AgentIdentitySerializer, JsonObjectField, StrictCharField
from regions.api.authentication import AgentTokenAuthentication, RegistrationTokenAuthentication
from regions.api.views.common import LIVENESS_DOWN
from regions.models import Agent, RegistrationToken
from regions.services import liveness
from regions.services.agents.heartbeat import fleet_size, heartbeat_record
from regions.services.agents.registry import agent_authenticate, agent_deregister, agent_queues, agent_register
from regions.services.config.current import config_current
from regions.services.handlers import schema_problem
from wire.endpoints import AGENT_TOKEN_HEADER, MAX_BUSY


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
    required_scopes = ()  # not an API key: the registration token is the permission

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
                   responses={201: dict, **errors(400, 401, 403, 409, 429, 503)})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            reg = agent_register(**data.validated_data, current_token=request.headers.get(AGENT_TOKEN_HEADER),
                                 registration_token=request.auth if isinstance(request.auth, RegistrationToken)
                                 else None)
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
        raw_token = bearer_from_header(request.META.get("HTTP_AUTHORIZATION"))
        try:
            busy = heartbeat_busy(request.body)
        except HeartbeatBodyInvalid as exc:
            # Who asks first (off the hot path: only a bad body reads the database):
            # nobody but the agent learns what its body should have been.
            agent_authenticate(agent_id=agent_id, raw_token=raw_token)
            return _json_error("invalid", str(exc), 400)
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
    required_scopes = ()  # not an API key: the agent acts as itself
    agent_token_checked = True  # against the database: a replaced token must not stop its replacement

    @extend_schema(request=None, responses={200: dict, **errors(401, 403, 404, 503)})
    def post(self, request, agent_id: str):
        try:
            agent_deregister(agent_id=request.user.agent_id)
        except liveness.RedisError as exc:
            raise ServiceUnavailable(LIVENESS_DOWN) from exc
        return Response({"agent_id": agent_id, "status": Agent.Status.STOPPED})
