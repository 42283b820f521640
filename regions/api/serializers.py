from rest_framework import serializers

from regions.models import Agent, Task


class TaskOutputSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = ["id", "url", "capability", "status", "status_reason", "priority", "timeout", "max_attempts",
                  "attempt", "idempotency_key", "target_agent", "agent", "payload", "result", "error",
                  "created_at", "dispatched_at", "started_at", "finished_at"]

    def get_url(self, task) -> str:
        from django.conf import settings

        return f"{settings.REGION_URL}/api/v1/tasks/{task.id}"

class AgentOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Agent
        fields = ["agent_id", "capabilities", "status", "desired", "busy", "kind", "version", "hostname",
                  "concurrency", "registered_at", "last_seen", "offline_since"]
