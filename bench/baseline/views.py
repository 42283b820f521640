import json
import time

from django_celery_results.models import TaskResult
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from .tasks import echo


class TaskSubmitApi(APIView):
    class InputSerializer(serializers.Serializer):
        payload = serializers.JSONField()

    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = echo.apply_async(kwargs={"payload": data.validated_data["payload"], "submitted_at": time.time()})
        return Response({"id": result.id, "status": "PENDING"}, status=status.HTTP_201_CREATED)


class TaskDetailApi(APIView):
    def get(self, request, task_id):
        row = TaskResult.objects.filter(task_id=task_id).first()
        if row is None:  # django-celery-results writes the row when the task ends
            return Response({"id": task_id, "status": "PENDING"})
        return Response({"id": row.task_id, "status": row.status, "result": json.loads(row.result or "null"),
                         "date_done": row.date_done})
