"""The agents as people see them: list, detail, and the desired state an
operator sets (drain, cordon, uncordon, revoke)."""
from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from project.accounts.audit import audited
from project.exceptions import ServiceUnavailable
from project.schema import PAGE_PARAMETERS, errors, list_filters, paginated
from regions import selectors
from regions.api.serializers import AgentOutputSerializer
from regions.api.views.common import LIVENESS_DOWN, Pages, query_filters
from regions.models import Agent
from regions.services import liveness
from regions.services.agents.registry import agent_set_desired


class _AgentPages(Pages):
    ordering = "agent_id"


class AgentListApi(APIView):
    required_scopes = ("fleet:read",)

    @extend_schema(operation_id="agents_list", parameters=[*list_filters(Agent.Status.values), *PAGE_PARAMETERS],
                   responses={200: paginated("PaginatedAgentList", AgentOutputSerializer), **errors(400, 401, 403, 503)})
    def get(self, request):
        qs = selectors.agent_list(**query_filters(request, Agent.Status.values))
        paginator = _AgentPages()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(AgentOutputSerializer(page, many=True).data)


class AgentDetailApi(APIView):
    required_scopes = ("fleet:read",)

    @extend_schema(responses={200: AgentOutputSerializer, **errors(401, 403, 404, 503)})
    def get(self, request, agent_id: str):
        agent = selectors.agent_get(agent_id=agent_id)
        if agent is None:
            raise NotFound(f"No agent {agent_id} in region {settings.REGION_ID}.")
        data = AgentOutputSerializer(agent).data
        data.update(selectors.agent_live_view(agent))
        data["running_tasks"] = selectors.agent_running_tasks(agent_id=agent_id)
        return Response(data)


def _desired_api(desired: str, name: str):
    class AgentDesiredApi(APIView):
        required_scopes = ("fleet:operate",)

        @extend_schema(request=None, responses={200: AgentOutputSerializer, **errors(401, 403, 404, 503)},
                       operation_id=f"agent_{name}")
        def post(self, request, agent_id: str):
            with audited(request, f"agent.{name}", target=agent_id):
                try:
                    agent = agent_set_desired(agent_id=agent_id, desired=desired)
                except liveness.RedisError as exc:
                    raise ServiceUnavailable(LIVENESS_DOWN) from exc
            return Response(AgentOutputSerializer(agent).data)

    AgentDesiredApi.__name__ = f"Agent{name.capitalize()}Api"
    return AgentDesiredApi


AgentDrainApi = _desired_api(Agent.Desired.DRAINING, "drain")
AgentCordonApi = _desired_api(Agent.Desired.CORDONED, "cordon")
AgentUncordonApi = _desired_api(Agent.Desired.ACTIVE, "uncordon")
AgentRevokeApi = _desired_api(Agent.Desired.STOPPED, "revoke")
