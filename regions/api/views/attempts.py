"""The agent's side of an attempt it received: claim it, report its outcome,
and report a message it dropped (dead letters)."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from project.schema import errors
from project.validation import StrictCharField, StrictRegexField, StrictUUIDField
from regions.api.authentication import AgentNotBlocklisted, AgentTokenAuthentication
from regions.services.deadletters import dead_letter_report
from regions.services.reports import OutcomeInvalid, outcome_clean, report_apply
from regions.services.tasks.claim import task_claim
from wire.protocol import OUTCOME_KINDS


class _AgentAttemptApi(APIView):
    """Called by an agent with its own token, for an attempt it received."""

    authentication_classes = [AgentTokenAuthentication]
    permission_classes = [IsAuthenticated, AgentNotBlocklisted]
    required_scopes = ()  # not an API key: the agent acts as itself


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
