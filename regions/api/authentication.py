"""The credentials a region takes besides API keys: a registration token (an
agent joining; or the router's registration grant for an agent it placed here),
an agent's own token (its claims, reports and dead letters, for the agent named
in the path only) and the router's assertion for a caller it forwards. API keys:
project.accounts."""
from __future__ import annotations

import time

from rest_framework.exceptions import AuthenticationFailed, PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.settings import api_settings

from project.accounts.assertions import PREFIX as ASSERTION_PREFIX
from project.accounts.authentication import (
    AGENT_TOKEN,
    REGISTRATION_TOKEN,
    ROUTER_ASSERTION,
    ROUTER_LOCATE,
    BearerAuthentication,
    Principal,
)
from project.exceptions import credential_refusals
from regions.services.agent_auth import AgentCaller, agent_caller
from regions.services.agents.registry import agent_authenticate, registration_token_check
from regions.services.config.current import HOT_PATH_CHECK_SECONDS, config_current
from regions.services.router_assertions import forwarded_caller, locate_grant_check, registration_grant_check


class RegistrationTokenAuthentication(BearerAuthentication):
    """One of this region's registration tokens (request.auth: the
    RegistrationToken, None for the bootstrap token of the settings), or the
    router's registration grant (`mra_…`) for exactly the agent id in the body
    (request.auth: the grant). An expired token is refused here; its uses and
    rate are spent by the registration."""

    scheme = REGISTRATION_TOKEN

    def verify(self, raw, request):
        if raw and raw.startswith(ASSERTION_PREFIX):
            data = request.data
            with credential_refusals():
                grant = registration_grant_check(raw=raw, agent_id=data.get("agent_id") if isinstance(
                    data, dict) else None)
            return Principal(), grant
        with credential_refusals():
            return Principal(), registration_token_check(raw)


class RouterAssertionAuthentication(BearerAuthentication):
    """`Authorization: Bearer mra_…`: a caller the router authenticated and
    forwarded here (project/accounts/assertions.py). request.user: this
    region's user of that username; request.auth: the assertion, whose scopes
    project.accounts.scopes.scopes_of reads. Anything else: not this kind."""

    scheme = ROUTER_ASSERTION

    def verify(self, raw, request):
        if raw is None or not raw.startswith(ASSERTION_PREFIX):
            return None
        with credential_refusals():
            return forwarded_caller(raw=raw, body=request.body, method=request.method, path=request.path_info,
                                    now=time.time())


class RouterLocator(Principal):
    """The router asking where a task is, for an operator of its console: no
    user of this region, so it owns no task and no scope (scopes_of: none)."""

    def __init__(self, operator: str):
        self.operator = operator


class RouterLocateAuthentication(BearerAuthentication):
    """`Authorization: Bearer mra_…` with purpose "locate", made for the task id
    in the path: the router's task finder (regions/api/views/locate.py).
    request.user: a RouterLocator naming the operator; request.auth: the
    assertion. Refused (401) as anything else, so no API key, session or
    forward assertion locates a task: a caller learns nothing here of another
    tenant's tasks."""

    scheme = ROUTER_LOCATE

    def verify(self, raw, request):
        if raw is None:
            return None
        if not raw.startswith(ASSERTION_PREFIX):
            raise AuthenticationFailed("Only the router's locate assertion is taken here.")
        with credential_refusals():
            assertion = locate_grant_check(raw=raw, task_id=request.parser_context["kwargs"]["task_id"],
                                           now=time.time())
        return RouterLocator(assertion.subject), assertion


class AgentTokenAuthentication(BearerAuthentication):
    """The agent named by the path's agent_id, proven by its own token:
    another agent's token is a 403, an unknown agent a 404. On the task path
    (claims, reports) a token this web process verified is trusted within the
    revocation bound, without a database read (regions.services.agent_auth); a
    view that changes the registration itself (deregistration) sets
    `agent_token_checked = True` and the token is checked against the database
    every time, so a token replaced a moment ago elsewhere is already refused."""

    scheme = AGENT_TOKEN

    def verify(self, raw, request):
        agent_id = request.parser_context["kwargs"]["agent_id"]
        with credential_refusals():
            if getattr(request.parser_context["view"], "agent_token_checked", False):
                agent = agent_authenticate(agent_id=agent_id, raw_token=raw)
                return AgentCaller(agent_id=agent.agent_id, capabilities=list(agent.capabilities)), None
            return agent_caller(agent_id=agent_id, raw_token=raw), None


class AgentNotBlocklisted(BasePermission):
    """On the task path: an agent the configuration blocklists may not claim or report."""

    def has_permission(self, request, view) -> bool:
        config = config_current(max_age=HOT_PATH_CHECK_SECONDS)  # claims and reports are the task path
        if config.agent_blocked(request.user.agent_id):
            raise PermissionDenied(f"Agent {request.user.agent_id} is blocklisted by configuration "
                                   f"{config.sha[:12]}.")
        return True


# The submissions the router forwards (task, batch): the region's own credentials,
# or the router's assertion.
FORWARDABLE = [*api_settings.DEFAULT_AUTHENTICATION_CLASSES, RouterAssertionAuthentication]
