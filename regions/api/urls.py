from django.urls import URLPattern, path

from project.validation import AgentIdConverter  # noqa: F401  registers <agent_id:...>
from regions.api.views import agents, attempts, callbacks, fleet, locate, schedules, tasks, workflows
from wire.endpoints import CLAIM, DEAD_LETTERS, DEREGISTER, HEARTBEAT, REGISTER, REPORT, Endpoint


def agent_path(endpoint: Endpoint, view) -> URLPattern:
    """What an agent calls, routed as the wire contract writes it."""
    return path(endpoint.route.format(agent_id="<agent_id:agent_id>"), view, name=endpoint.name)


urlpatterns = [
    # First: the hot path resolves without trying the others.
    agent_path(HEARTBEAT, agents.agent_heartbeat_view),
    agent_path(REGISTER, agents.AgentRegisterApi.as_view()),
    path("agents", fleet.AgentListApi.as_view(), name="agent-list"),
    path("agents/<agent_id:agent_id>", fleet.AgentDetailApi.as_view(), name="agent-detail"),
    agent_path(CLAIM, attempts.TaskClaimApi.as_view()),
    agent_path(DEAD_LETTERS, attempts.AgentDeadLetterApi.as_view()),
    agent_path(REPORT, attempts.TaskReportApi.as_view()),
    agent_path(DEREGISTER, agents.AgentDeregisterApi.as_view()),
    path("agents/<agent_id:agent_id>/drain", fleet.AgentDrainApi.as_view(), name="agent-drain"),
    path("agents/<agent_id:agent_id>/cordon", fleet.AgentCordonApi.as_view(), name="agent-cordon"),
    path("agents/<agent_id:agent_id>/uncordon", fleet.AgentUncordonApi.as_view(), name="agent-uncordon"),
    path("agents/<agent_id:agent_id>/revoke", fleet.AgentRevokeApi.as_view(), name="agent-revoke"),
    path("tasks", tasks.TaskListSubmitApi.as_view(), name="task-list"),
    path("tasks/batch", tasks.TaskBatchSubmitApi.as_view(), name="task-batch"),
    path("tasks/wait", tasks.TaskWaitApi.as_view(), name="task-wait"),
    path("tasks/<uuid:task_id>", tasks.TaskDetailApi.as_view(), name="task-detail"),
    path("tasks/<uuid:task_id>/cancel", tasks.TaskCancelApi.as_view(), name="task-cancel"),
    path("tasks/<uuid:task_id>/retry", tasks.TaskRetryApi.as_view(), name="task-retry"),
    # Any string: an id that is not a UUID is a 400 here, not a 404 (the router's task finder).
    path("tasks/<str:task_id>/locate", locate.TaskLocateApi.as_view(), name="task-locate"),
    path("callbacks/secret", callbacks.CallbackSecretRotateApi.as_view(), name="callback-secret"),
    path("workflows", workflows.WorkflowListSubmitApi.as_view(), name="workflow-list"),
    path("workflows/<uuid:workflow_id>", workflows.WorkflowDetailApi.as_view(), name="workflow-detail"),
    path("workflows/<uuid:workflow_id>/cancel", workflows.WorkflowCancelApi.as_view(), name="workflow-cancel"),
    path("workflows/<uuid:workflow_id>/retry", workflows.WorkflowRetryApi.as_view(), name="workflow-retry"),
    path("region/status", tasks.RegionStatusApi.as_view(), name="region-status"),
    path("schedules", schedules.ScheduleListApi.as_view(), name="schedule-list"),
]
