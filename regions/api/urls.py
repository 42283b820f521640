from django.urls import path

from project.validation import AgentIdConverter  # noqa: F401  registers <agent_id:...>
from regions.api import views

urlpatterns = [
    # First: the hot path resolves without trying the others.
    path("agents/<agent_id:agent_id>/heartbeat", views.agent_heartbeat_view, name="agent-heartbeat"),
    path("agents/register", views.AgentRegisterApi.as_view(), name="agent-register"),
    path("agents", views.AgentListApi.as_view(), name="agent-list"),
    path("agents/<agent_id:agent_id>", views.AgentDetailApi.as_view(), name="agent-detail"),
    path("agents/<agent_id:agent_id>/claim", views.TaskClaimApi.as_view(), name="agent-claim"),
    path("agents/<agent_id:agent_id>/dead-letters", views.AgentDeadLetterApi.as_view(), name="agent-dead-letters"),
    path("agents/<agent_id:agent_id>/report", views.TaskReportApi.as_view(), name="agent-report"),
    path("agents/<agent_id:agent_id>/deregister", views.AgentDeregisterApi.as_view(), name="agent-deregister"),
    path("agents/<agent_id:agent_id>/drain", views.AgentDrainApi.as_view(), name="agent-drain"),
    path("agents/<agent_id:agent_id>/cordon", views.AgentCordonApi.as_view(), name="agent-cordon"),
    path("agents/<agent_id:agent_id>/uncordon", views.AgentUncordonApi.as_view(), name="agent-uncordon"),
    path("agents/<agent_id:agent_id>/revoke", views.AgentRevokeApi.as_view(), name="agent-revoke"),
    path("tasks", views.TaskListSubmitApi.as_view(), name="task-list"),
    path("tasks/batch", views.TaskBatchSubmitApi.as_view(), name="task-batch"),
    path("tasks/wait", views.TaskWaitApi.as_view(), name="task-wait"),
    path("tasks/<uuid:task_id>", views.TaskDetailApi.as_view(), name="task-detail"),
    path("tasks/<uuid:task_id>/cancel", views.TaskCancelApi.as_view(), name="task-cancel"),
    path("tasks/<uuid:task_id>/retry", views.TaskRetryApi.as_view(), name="task-retry"),
    path("region/status", views.RegionStatusApi.as_view(), name="region-status"),
]
