"""The router's task finder at a region: where a task is, never what it holds."""
from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from project.schema import errors
from project.validation import StrictUUIDField
from regions import selectors
from regions.api.authentication import RouterLocateAuthentication


class TaskLocateApi(APIView):
    """Whether this region holds a task, for the router's console (an operator
    typed its id there): the router asks every region at once. Only the
    router's locate assertion, made for this region and this task id, opens it:
    no API key, whatever its scopes, so no caller learns here that another
    tenant's task exists. The answer is the task's place, never its data."""

    authentication_classes = [RouterLocateAuthentication]
    permission_classes = [IsAuthenticated]
    required_scopes = ()  # the credential is the router's, not a caller's key

    class PathSerializer(serializers.Serializer):
        task_id = StrictUUIDField()

    class OutputSerializer(serializers.Serializer):
        found = serializers.BooleanField()
        status = serializers.CharField(allow_null=True, help_text="the task's status; null when not found")
        capability = serializers.CharField(allow_null=True)
        created_at = serializers.DateTimeField(allow_null=True)
        finished_at = serializers.DateTimeField(allow_null=True, help_text="null until the task is final")

    @extend_schema(
        operation_id="tasks_locate",
        parameters=[OpenApiParameter("task_id", str, OpenApiParameter.PATH, description="the task's id (a UUID)")],
        responses={200: OutputSerializer, **errors(400, 401, 403, 503)},
        description="The router's task finder: whether this region holds the task, and its status, capability and "
                    "times; never its payload, result or error. Only the router calls it, with a locate assertion "
                    "made for this region and this task id (routerLocate); any other credential is a 401.")
    def get(self, request, task_id: str):
        data = self.PathSerializer(data={"task_id": task_id})
        data.is_valid(raise_exception=True)
        location = selectors.task_location(task_id=data.validated_data["task_id"])
        answer = {"found": location is not None, "status": None, "capability": None, "created_at": None,
                  "finished_at": None, **(location or {})}
        return Response(self.OutputSerializer(answer).data)
