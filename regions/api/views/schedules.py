"""The schedules of the configuration repository as this region runs them."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from project.schema import errors
from regions import selectors


class ScheduleRunOutputSerializer(serializers.Serializer):
    due_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()
    outcome = serializers.CharField(help_text="created, skipped (overlap), missed (catch_up) or refused")
    detail = serializers.CharField()
    task_id = serializers.UUIDField(allow_null=True)
    task_status = serializers.CharField(allow_null=True)


class ScheduleOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    cron = serializers.CharField(allow_null=True)
    timezone = serializers.CharField(allow_null=True)
    interval = serializers.IntegerField(allow_null=True, help_text="seconds")
    capability = serializers.CharField()
    priority = serializers.IntegerField()
    regions = serializers.ListField(child=serializers.CharField())
    overlap = serializers.CharField()
    catch_up = serializers.CharField()
    next_due = serializers.DateTimeField()
    behind = serializers.BooleanField(help_text="a due time passed more than three ticks ago with no run")
    behind_since = serializers.DateTimeField(allow_null=True)
    last_run = ScheduleRunOutputSerializer(allow_null=True)


class ScheduleListApi(APIView):
    required_scopes = ("fleet:read",)

    @extend_schema(operation_id="schedules_list", responses={
        200: inline_serializer("ScheduleList", {"results": ScheduleOutputSerializer(many=True)}),
        **errors(401, 403, 503)})
    def get(self, request):
        return Response({"results": ScheduleOutputSerializer(selectors.schedule_list(), many=True).data})
