from django.urls import path

from router import views
from wire.endpoints import DISCOVER

urlpatterns = [
    path(DISCOVER.route, views.RegisterAgentApi.as_view(), name=DISCOVER.name),
    path("update_regional_status", views.UpdateRegionalStatusApi.as_view(), name="update-regional-status"),
    path("api/v1/route", views.RouteApi.as_view(), name="route"),
    path("api/v1/tasks", views.TaskForwardApi.as_view(), name="router-tasks"),
    path("api/v1/tasks/batch", views.TaskBatchForwardApi.as_view(), name="router-task-batch"),
    # A task's reads and actions: 307 to its region (?region=), never proxied.
    path("api/v1/tasks/wait", views.TaskWaitRedirectApi.as_view(), name="router-task-wait"),
    path("api/v1/tasks/<uuid:task_id>", views.TaskDetailRedirectApi.as_view(), name="router-task-detail"),
    path("api/v1/tasks/<uuid:task_id>/cancel", views.TaskCancelRedirectApi.as_view(), name="router-task-cancel"),
    path("api/v1/tasks/<uuid:task_id>/retry", views.TaskRetryRedirectApi.as_view(), name="router-task-retry"),
    path("api/v1/regions", views.RegionListApi.as_view(), name="router-regions"),
    path("api/v1/config/drift", views.ConfigDriftApi.as_view(), name="router-config-drift"),
]
