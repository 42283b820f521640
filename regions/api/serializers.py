from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from regions.models import Agent, Task, Workflow


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


class CallbackAttemptSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    at = serializers.DateTimeField()
    outcome = serializers.ChoiceField(choices=["delivered", "failed", "refused"])
    response_code = serializers.IntegerField(allow_null=True, help_text="the receiver's HTTP status, if it answered")
    error = serializers.CharField()
    duration_ms = serializers.IntegerField()


class CallbackStateSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=["pending", "delivered", "gave_up"])
    attempts = CallbackAttemptSerializer(many=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    delivered_at = serializers.DateTimeField(allow_null=True)


class TaskOutputSerializer(SharedFieldsMixin, serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    region_id = serializers.SerializerMethodField()
    callback = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = ["id", "url", "capability", "status", "status_reason", "priority", "timeout", "max_attempts",
                  "attempt", "idempotency_key", "target_agent", "agent", "payload", "result", "error",
                  "created_at", "dispatched_at", "started_at", "finished_at", "region_id", "callback_url",
                  "callback"]

    def get_url(self, task) -> str:
        from django.conf import settings

        return f"{settings.REGION_URL}/api/v1/tasks/{task.id}"

    def get_region_id(self, task) -> str:
        from django.conf import settings

        return settings.REGION_ID

    @extend_schema_field(CallbackStateSerializer(allow_null=True))
    def get_callback(self, task):
        """null without a callback_url (no query then)."""
        if not task.callback_url:
            return None
        from regions.selectors import task_callback

        shown = task_callback(task)
        return CallbackStateSerializer(shown).data if shown else None


class AgentOutputSerializer(SharedFieldsMixin, serializers.ModelSerializer):
    class Meta:
        model = Agent
        fields = ["agent_id", "capabilities", "status", "desired", "busy", "kind", "version", "hostname",
                  "concurrency", "registered_at", "last_seen", "offline_since"]


class WorkflowStepTaskSerializer(serializers.Serializer):
    member = serializers.IntegerField(help_text="its position in its group (0 for a step of its own)")
    capability = serializers.CharField()
    task_id = serializers.UUIDField(allow_null=True, help_text="null until the step starts")
    status = serializers.CharField(help_text="the task's status, or pending before it exists")


class WorkflowStepSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=["task", "group"])
    status = serializers.CharField(help_text="pending, running, succeeded, failed or cancelled")
    tasks = WorkflowStepTaskSerializer(many=True)


class WorkflowOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.SerializerMethodField()
    status = serializers.ChoiceField(choices=Workflow.Status.choices)
    error = serializers.CharField(help_text="names the step that failed")
    result = serializers.JSONField(allow_null=True, help_text="the last step's result (a list after a group)")
    idempotency_key = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    region_id = serializers.SerializerMethodField()
    steps = serializers.SerializerMethodField()

    def get_url(self, workflow) -> str:
        from django.conf import settings

        return f"{settings.REGION_URL}/api/v1/workflows/{workflow.id}"

    def get_region_id(self, workflow) -> str:
        from django.conf import settings

        return settings.REGION_ID

    @extend_schema_field(WorkflowStepSerializer(many=True))
    def get_steps(self, workflow) -> list[dict]:
        from regions.selectors import workflow_steps

        return WorkflowStepSerializer(workflow_steps(workflow), many=True).data
