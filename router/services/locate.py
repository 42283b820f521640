"""The router's task finder: which region holds a task, asked of every enabled
region at once (regions/api/views/locate.py answers). Nothing is stored here:
the answer goes to the operator's page and is forgotten; the router sees a
task's status, capability and times, never its payload, result or error.

Each region is asked with an assertion of its own (purpose "locate", for that
region and that task id, once), never a caller's credential; each within
ROUTER_LOCATE_TIMEOUT_SECONDS, all within ROUTER_LOCATE_BUDGET_SECONDS, at
most ROUTER_LOCATE_CONCURRENCY at a time: a web worker runs one request at a
time, and gunicorn kills it past 30 s. A region that did not answer is named
with why, so "not found" says where it was not looked for."""
from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import requests
from django.conf import settings
from django.utils.dateparse import parse_datetime
from urllib3.exceptions import HTTPError, MaxRetryError, NewConnectionError, ReadTimeoutError

from project.accounts.assertions import LOCATE, assertion_sign
from project.validation import CAPABILITY_RE
from router import inputs
from router.selectors import regions_directory
from router.services.forwarding import signing_key

# Why a region did not answer, as the operator reads it.
UNREACHABLE, TIMEOUT, REFUSED, ERROR = "unreachable", "timeout", "refused", "error"
SILENCE = {UNREACHABLE: "unreachable", TIMEOUT: "timeout", REFUSED: "refused the router's credential",
           ERROR: "answered with an error"}
_STATUS_RE = re.compile(r"^[a-z_]{1,32}$")
_ANSWER_MAX = 4096  # the answer is five fields; anything longer is not one


@dataclass(frozen=True)
class RegionAnswer:
    """One region's answer: `outcome` found, not_found, or why it did not answer."""

    region_id: str
    outcome: str
    status: str | None = None
    capability: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    console_url: str | None = None  # the task in the region's own admin

    @property
    def why(self) -> str:
        return SILENCE.get(self.outcome, self.outcome)


@dataclass(frozen=True)
class TaskLocation:
    task_id: str
    asked: tuple[str, ...]
    found: tuple[RegionAnswer, ...] = ()
    not_found: tuple[str, ...] = ()
    silent: tuple[RegionAnswer, ...] = field(default=())

    def summary(self) -> str:
        """One line for a person: where it is, or where it was not, and who did not answer."""
        if not self.asked:
            return "No enabled region to ask."
        if self.found:
            head = f"Found in {', '.join(a.region_id for a in self.found)}"
        else:
            answered = len(self.not_found)
            head = (f"Not found in the {answered} region{'' if answered == 1 else 's'} that answered "
                    f"(of {len(self.asked)} asked)")
        silence = "; ".join(f"{a.region_id} did not answer ({a.why})" for a in self.silent)
        return f"{head}; {silence}." if silence else f"{head}."

    def audit_detail(self) -> str:
        """What the audit trail keeps: where the router looked and who answered,
        never what a region said of the task (its status, capability, times)."""
        parts = [f"asked {len(self.asked)} region(s)"]
        if self.found:
            parts.append("found in " + ", ".join(a.region_id for a in self.found))
        else:
            parts.append("not found")
        if self.silent:
            parts.append("no answer from " + ", ".join(f"{a.region_id} ({a.outcome})" for a in self.silent))
        return "; ".join(parts)


def task_console_url(*, orchestrator_url: str, task_id: str) -> str | None:
    """The task's page in its region's admin; None when the stored URL is not http(s)."""
    url = (orchestrator_url or "").rstrip("/")
    if not inputs.orchestrator_url(url):
        return None
    return f"{url}/admin/regions/task/{task_id}/change/"


def task_locate(*, task_id: uuid.UUID, operator: str = "router") -> TaskLocation:
    """Ask every enabled region whether it holds `task_id`, in parallel and
    within the budget; NoSigningKey when the router cannot vouch for itself.
    `operator` (who asked, at the router) is the assertion's subject, for the
    regions' logs."""
    key = signing_key()
    task = str(task_id)
    regions = [(r.region_id, r.orchestrator_url) for r in regions_directory()]
    answers: dict[str, RegionAnswer] = {}
    pending = list(regions)
    lock = threading.Lock()
    done = threading.Condition(lock)
    timeout = float(settings.ROUTER_LOCATE_TIMEOUT_SECONDS)
    deadline = time.monotonic() + float(settings.ROUTER_LOCATE_BUDGET_SECONDS)

    def work() -> None:
        while True:
            with lock:
                if not pending or time.monotonic() >= deadline:
                    return
                region_id, url = pending.pop(0)
            assertion = assertion_sign(key=key, audience=region_id, subject=operator or "router", purpose=LOCATE,
                                       ttl=settings.ROUTER_ASSERTION_TTL_SECONDS, task=task)
            answer = _ask(region_id=region_id, url=url, task_id=task, assertion=assertion,
                          timeout=min(timeout, max(0.05, deadline - time.monotonic())))
            with done:
                answers[region_id] = answer
                done.notify_all()

    # Daemon threads: one stuck on a region that drips its answer never holds the
    # request (it ends at the deadline whatever they do) nor the process's exit.
    for _ in range(min(len(regions), max(1, int(settings.ROUTER_LOCATE_CONCURRENCY)))):
        threading.Thread(target=work, daemon=True, name="router-locate").start()
    with done:
        while len(answers) < len(regions):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            done.wait(left)
        final = dict(answers)
    ordered = [final.get(region_id) or RegionAnswer(region_id=region_id, outcome=TIMEOUT)
               for region_id, _ in regions]
    return TaskLocation(
        task_id=task, asked=tuple(region_id for region_id, _ in regions),
        found=tuple(a for a in ordered if a.outcome == "found"),
        not_found=tuple(a.region_id for a in ordered if a.outcome == "not_found"),
        silent=tuple(a for a in ordered if a.outcome not in ("found", "not_found")))


def _ask(*, region_id: str, url: str, task_id: str, assertion: str, timeout: float) -> RegionAnswer:
    try:
        response = requests.get(f"{url.rstrip('/')}/api/v1/tasks/{task_id}/locate", timeout=(timeout, timeout),
                                headers={"Authorization": f"Bearer {assertion}", "Accept": "application/json"},
                                allow_redirects=False, stream=True)
        with response:
            body = response.raw.read(_ANSWER_MAX + 1, decode_content=True)
    except (requests.Timeout, TimeoutError, ReadTimeoutError):  # before its answer, or in the middle of it
        return RegionAnswer(region_id=region_id, outcome=TIMEOUT)
    except requests.RequestException as exc:
        return RegionAnswer(region_id=region_id, outcome=TIMEOUT if _timed_out(exc) else UNREACHABLE)
    except (HTTPError, OSError):  # the connection dropped in the middle of the answer
        return RegionAnswer(region_id=region_id, outcome=ERROR)
    if response.status_code in (401, 403):
        return RegionAnswer(region_id=region_id, outcome=REFUSED)
    if response.status_code != 200 or len(body) > _ANSWER_MAX:
        return RegionAnswer(region_id=region_id, outcome=ERROR)
    return _answer_read(region_id=region_id, url=url, task_id=task_id, body=body)


def _answer_read(*, region_id: str, url: str, task_id: str, body: bytes) -> RegionAnswer:
    """Only the five fields of the contract, each checked; anything else a
    region sends (a payload, an error text) is never read."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return RegionAnswer(region_id=region_id, outcome=ERROR)
    if not isinstance(data, dict) or not isinstance(data.get("found"), bool):
        return RegionAnswer(region_id=region_id, outcome=ERROR)
    if not data["found"]:
        return RegionAnswer(region_id=region_id, outcome="not_found")
    status, capability = data.get("status"), data.get("capability")
    return RegionAnswer(
        region_id=region_id, outcome="found",
        status=status if isinstance(status, str) and _STATUS_RE.match(status) else None,
        capability=capability if isinstance(capability, str) and re.match(CAPABILITY_RE, capability) else None,
        created_at=_time(data.get("created_at")), finished_at=_time(data.get("finished_at")),
        console_url=task_console_url(orchestrator_url=url, task_id=task_id))


def _time(value) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None


def _timed_out(exc: requests.RequestException) -> bool:
    cause = exc.args[0] if exc.args else None
    if isinstance(cause, MaxRetryError) and isinstance(cause.reason, NewConnectionError):
        return False  # refused or no route: unreachable
    return "timed out" in str(exc).lower()
