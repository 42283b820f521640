from django.urls import URLPattern, path

from project.validation import AgentIdConverter  # noqa: F401  registers <agent_id:...>
from regions.api.views import tasks as views
from wire.endpoints import CLAIM, DEAD_LETTERS, DEREGISTER, HEARTBEAT, REGISTER, REPORT, Endpoint


def agent_path(endpoint: Endpoint, view) -> URLPattern:
    """What an agent calls, routed as the wire contract writes it."""
    return path(endpoint.route.format(agent_id="<agent_id:agent_id>"), view, name=endpoint.name)


urlpatterns = [
    # First: the hot path resolves without trying the others.
    agent_path(HEARTBEAT, views.agent_heartbeat_view),
    agent_path(REGISTER, views.AgentRegisterApi.as_view()),
    path("agents", views.AgentListApi.as_view(), name="agent-list"),
    path("agents/<agent_id:agent_id>", views.AgentDetailApi.as_view(), name="agent-detail"),
    agent_path(CLAIM, views.TaskClaimApi.as_view()),
    agent_path(DEAD_LETTERS, views.AgentDeadLetterApi.as_view()),
    agent_path(REPORT, views.TaskReportApi.as_view()),
    agent_path(DEREGISTER, views.AgentDeregisterApi.as_view()),
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
