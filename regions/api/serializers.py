from rest_framework import serializers

from regions.models import Agent, Task


class SharedFieldsMixin:
    """An output serializer whose fields are built once per class, not once per
    answer: a ModelSerializer otherwise deep-copies and rebuilds every field for
    each object it renders (a tenth of a task submission's time). Only for
    read-only serializers whose fields keep no per-request state."""

    @property
    def _readable_fields(self):
        shared = type(self).__dict__.get("_shared_readable_fields")
        if shared is None:
            shared = tuple(field for field in self.fields.values() if not field.write_only)
            type(self)._shared_readable_fields = shared
        return shared


class TaskOutputSerializer(SharedFieldsMixin, serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    region_id = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = ["id", "url", "capability", "status", "status_reason", "priority", "timeout", "max_attempts",
                  "attempt", "idempotency_key", "target_agent", "agent", "payload", "result", "error",
                  "created_at", "dispatched_at", "started_at", "finished_at", "region_id"]

    def get_url(self, task) -> str:
        from django.conf import settings

        return f"{settings.REGION_URL}/api/v1/tasks/{task.id}"

    def get_region_id(self, task) -> str:
        from django.conf import settings

        return settings.REGION_ID


class AgentOutputSerializer(SharedFieldsMixin, serializers.ModelSerializer):
    class Meta:
        model = Agent
        fields = ["agent_id", "capabilities", "status", "desired", "busy", "kind", "version", "hostname",
                  "concurrency", "registered_at", "last_seen", "offline_since"]
