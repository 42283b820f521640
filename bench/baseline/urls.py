from django.urls import path

from .views import TaskDetailApi, TaskSubmitApi

urlpatterns = [
    path("tasks", TaskSubmitApi.as_view()),
    path("tasks/<str:task_id>", TaskDetailApi.as_view()),
]
