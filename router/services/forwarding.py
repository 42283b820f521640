"""Submissions passed through to a region (nothing stored here), and redirects
to the region that holds a task."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from urllib3.exceptions import MaxRetryError, NewConnectionError

from project.accounts.assertions import FORWARD, assertion_sign, router_signing_key
from router.selectors import directory
from router.services.outcomes import forward_outcome_of_status, forward_outcome_record
from router.services.refusals import ForwardBudgetSpent, ForwardUncertain, NoRegion, NoSigningKey, NotFound
from router.services.routing import route, route_all


@dataclass(frozen=True)
class Caller:
    """Who the router vouches for: its username and scopes here. Its credential
    itself never leaves the router."""

    username: str
    scopes: frozenset[str]


def task_forward(*, capability: str, residency: str | None, region: str | None = None, body: bytes,
                 caller: Caller) -> tuple[int, dict]:
    """Send a submission to the best region, the next one if it cannot be
    reached. Nothing is stored here: the body passes through. `region` pins the
    forward to that region (a retry after an uncertain forward must go where the
    first try may have landed: idempotency keys are kept per region).

    The whole forward, across candidates, is held to ROUTER_FORWARD_BUDGET_SECONDS
    (each connect to ROUTER_FORWARD_CONNECT_TIMEOUT): the web worker runs one
    request at a time, and gunicorn kills it past its 30 s timeout."""
    candidates = route(capability=capability, residency=residency, region=region, count=5).regions
    return _forward(candidates=candidates, path="/api/v1/tasks", key="task", body=body, caller=caller)


def task_batch_forward(*, capabilities: list[str], residency: str | None, region: str | None = None, body: bytes,
                       caller: Caller) -> tuple[int, dict]:
    """Send a whole batch to ONE region that serves every capability in it (a
    batch is one request to one region: its items are answered together, and a
    retry after an uncertain forward goes to that region with the same keys).
    Same candidates, budget and uncertainty rules as task_forward."""
    candidates = route_all(capabilities=capabilities, residency=residency, region=region, count=5)
    return _forward(candidates=candidates, path="/api/v1/tasks/batch", key="batch", body=body, caller=caller)


def signing_key() -> Ed25519PrivateKey:
    key = router_signing_key()
    if key is None:
        raise NoSigningKey("The router cannot forward: ROUTER_SIGNING_KEY is not set (manage.py "
                           "router_signing_key makes one). Submit to a region directly.")
    return key


def forward_assertion(*, caller: Caller, region_id: str, path: str, body: bytes) -> str:
    """What the router sends a region instead of the caller's credential: a
    signed statement, for that region only, of who the caller is, what it may
    do and which body it sent, good once and for ROUTER_ASSERTION_TTL_SECONDS."""
    return assertion_sign(key=signing_key(), audience=region_id, subject=caller.username, purpose=FORWARD,
                          ttl=settings.ROUTER_ASSERTION_TTL_SECONDS, scopes=caller.scopes, body=body,
                          method="POST", path=path)


def _forward(*, candidates: list[dict], path: str, key: str, body: bytes, caller: Caller) -> tuple[int, dict]:
    """POST `body` to `path` of the first candidate region that can be reached,
    within ROUTER_FORWARD_BUDGET_SECONDS; the region's answer comes back under
    `key`, with the region's status code. Each region gets an assertion of its
    own (forward_assertion), never the caller's credential."""
    signing_key()  # no key, no forward: refused before any region is tried
    budget = float(settings.ROUTER_FORWARD_BUDGET_SECONDS)
    deadline = time.monotonic() + budget
    errors = {}
    for candidate in candidates:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ForwardBudgetSpent(
                f"No region answered within the router's forward budget of {budget:g} s "
                f"(ROUTER_FORWARD_BUDGET_SECONDS); the task was sent nowhere: retry later.",
                retry_after=max(1, math.ceil(budget)), errors=errors)
        url = f"{candidate['orchestrator_url']}{path}"
        assertion = forward_assertion(caller=caller, region_id=candidate["region_id"], path=path, body=body)
        try:
            response = requests.post(url, data=body, timeout=(min(settings.ROUTER_FORWARD_CONNECT_TIMEOUT, left), left),
                                     headers={"Authorization": f"Bearer {assertion}",
                                              "Content-Type": "application/json"})
        except requests.RequestException as exc:
            never_sent = _never_sent(exc)
            forward_outcome_record(region_id=candidate["region_id"],
                                   outcome="unreachable" if never_sent else "no_answer")
            if never_sent:
                # Not connected: the region never saw the task, the next one may take it.
                errors[candidate["region_id"]] = f"unreachable: {exc.__class__.__name__}"
                continue
            # Sent but unanswered: it may have been accepted there. Trying another
            # region could run it twice (idempotency keys are per region), so say
            # where it may be and stop.
            raise ForwardUncertain(
                f"Region {candidate['region_id']} ({candidate['orchestrator_url']}) did not answer "
                f"({exc.__class__.__name__}); the task may have been accepted there. Idempotency keys are kept per "
                f"region: check there, or retry against that region only, with the same idempotency_key "
                f"({url}, or here with \"region\": "
                f"\"{candidate['region_id']}\"). An unpinned retry here may pick another region and run it twice.",
                region_id=candidate["region_id"], regional_orchestrator_url=candidate["orchestrator_url"],
                retry_with={"region": candidate["region_id"]}) from exc
        # A refusal (429, 503) or an error answer goes back to the caller as it is: the
        # region answered, and whether it kept the task only it can say.
        try:
            data = response.json()
        except (ValueError, RecursionError):  # not JSON, or nested deeper than Python recurses
            data = {"detail": response.text[:500]}
        forward_outcome_record(region_id=candidate["region_id"],
                               outcome=forward_outcome_of_status(response.status_code, data))
        return response.status_code, {"region_id": candidate["region_id"],
                                      "regional_orchestrator_url": candidate["orchestrator_url"],
                                      key: data}
    raise NoRegion("No eligible region accepted the task.", errors=errors)


def task_redirect(*, region_id: str, path: str, query: str) -> str:
    """Where a request about a task of `region_id` belongs: that region's
    orchestrator URL with the same path and query (the caller's `region`
    already taken out). The router answers with a redirect there and never
    carries the answer: task data and results never cross it. A stale region
    is still named (its summaries may lag while it serves); a disabled or
    unknown one is not."""
    entry = directory().by_region_id.get(region_id)
    if entry is None:
        raise NotFound(f"No region {region_id} (unknown or disabled).", region_id=region_id)
    return f"{entry.region.orchestrator_url}{path}{f'?{query}' if query else ''}"


def _never_sent(exc: requests.RequestException) -> bool:
    """True only when no connection was made (timed out or refused while
    connecting, or the TLS handshake failed): the request never left. A
    connection dropped after sending is not that: the region may have it."""
    if isinstance(exc, (requests.ConnectTimeout, requests.exceptions.SSLError)):
        return True
    cause = exc.args[0] if exc.args else None
    return isinstance(cause, MaxRetryError) and isinstance(cause.reason, NewConnectionError)
