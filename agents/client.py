"""HTTP client an agent uses to talk to its regional orchestrator."""
from __future__ import annotations

import http.client
import logging
import os

import requests
from urllib3.exceptions import ProtocolError

from wire.endpoints import (AGENT_TOKEN_HEADER, CLAIM, DEAD_LETTERS, DEREGISTER, DISCOVER, HEARTBEAT, REGISTER,
                            REPORT)


logger = logging.getLogger("meridian.agent")

# What a request on a kept-alive connection raises when the server closed that
# connection just as it was reused (its idle timer fired as the request went
# out): reset, aborted, or closed with no response. The web closes an idle
# connection only between requests, so such a request almost always never
# reached Django; a server that died mid-request looks the same, so only a call
# the region answers the same way twice is sent again (RegionClient._post).
CLOSED_UNANSWERED = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, http.client.RemoteDisconnected)


def closed_unanswered(exc: requests.ConnectionError) -> bool:
    """The connection was reset, aborted or closed before any response came."""
    reason = exc.args[0] if exc.args else None
    return isinstance(reason, ProtocolError) and any(isinstance(part, CLOSED_UNANSWERED) for part in reason.args)


class RegionRefused(Exception):
    """The region (or router) answered 4xx, or 503 with a reason."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class RegionClient:
    def __init__(self, base_url: str, timeout: float = 5.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        # The environment (proxies, CA bundle) is read once here, not on every
        # request: requests otherwise re-reads it per call, a third of a claim's
        # CPU on the agent. The same settings apply.
        self.session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
        self.session.verify = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                               or self.session.verify)
        self.session.trust_env = False

    def _post(self, path: str, token: str, body: dict, headers: dict | None = None, *,
              replayable: bool = False) -> dict:
        """replayable: the region answers the call the same way twice (a heartbeat,
        a claim with its claim_id, a report, a deregistration), so one that meets
        a kept-alive connection closed under it is sent again at once, once. The
        failed connection is gone from the pool by then: the second try opens a
        new one. Anything else (refused, timed out, reset again) is the caller's."""
        url, headers = f"{self.base_url}{path}", {"Authorization": f"Bearer {token}", **(headers or {})}
        try:
            response = self.session.post(url, json=body, timeout=self.timeout, headers=headers)
        except requests.ConnectionError as exc:
            if not (replayable and closed_unanswered(exc)):
                raise
            logger.debug("%s: connection closed before any answer (%s); sending again on a new one", path, exc)
            response = self.session.post(url, json=body, timeout=self.timeout, headers=headers)
        if 400 <= response.status_code < 500 or response.status_code == 503:
            try:
                detail = response.json().get("detail") or response.text
            except ValueError:
                detail = response.text
            detail = detail or response.reason or f"HTTP {response.status_code}"
            raise RegionRefused(response.status_code, detail)
        response.raise_for_status()
        return response.json()

    def register(self, *, registration_token: str, agent_id: str, capabilities: list[str],
                 version: str, hostname: str, concurrency: int, kind: str = "celery",
                 handlers: dict | None = None, current_token: str | None = None) -> dict:
        """current_token: the agent's saved credential, which proves it is the agent
        already registered (and perhaps still online) under this id; without it,
        re-registering an online id is refused with 409."""
        return self._post(REGISTER.url(), registration_token, {
            "agent_id": agent_id, "capabilities": capabilities, "version": version,
            "hostname": hostname, "concurrency": concurrency, "kind": kind,
            # What each handler declares (version, timeout, payload schema): the
            # region checks submissions against the schema.
            **({"handlers": handlers} if handlers else {}),
        }, headers={AGENT_TOKEN_HEADER: current_token} if current_token else None)

    def heartbeat(self, *, agent_id: str, token: str, busy: int) -> dict:
        return self._post(HEARTBEAT.url(agent_id=agent_id), token, {"busy": busy}, replayable=True)

    def claim(self, *, agent_id: str, token: str, task_id: str, attempt: int, claim_id: str = "") -> dict:
        """{"run": True, "capability", "payload", "timeout", "secrets"}; RegionRefused(409)
        when the attempt is not current."""
        return self._post(CLAIM.url(agent_id=agent_id), token,
                          {"task_id": task_id, "attempt": attempt, "claim_id": claim_id},
                          replayable=bool(claim_id))  # the same claim_id asking again gets the same grant

    def report(self, *, agent_id: str, token: str, kind: str, task_id: str, attempt: int, body: dict) -> dict:
        # Fenced in the region: a repeated report changes nothing ({"recorded": false}).
        return self._post(REPORT.url(agent_id=agent_id), token,
                          {"task_id": task_id, "attempt": attempt, "kind": kind, "body": body}, replayable=True)

    def dead_letter(self, *, agent_id: str, token: str, letter: dict) -> dict:
        return self._post(DEAD_LETTERS.url(agent_id=agent_id), token, letter)

    def deregister(self, *, agent_id: str, token: str) -> dict:
        return self._post(DEREGISTER.url(agent_id=agent_id), token, {}, replayable=True)


class RouterClient(RegionClient):
    """Discovery through the Global Task Router (POST /register_agent)."""

    def register_agent(self, *, registration_token: str, agent_id: str, capabilities: list[str],
                       region: str | None = None) -> dict:
        body = {"agent_id": agent_id, "capabilities": capabilities}
        if region:
            body["region"] = region
        return self._post(DISCOVER.url(), registration_token, body)
