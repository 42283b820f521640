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

import http.client
import io
import json
import os
import re
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

import requests.certs
from django.conf import settings
from django.utils.dateparse import parse_datetime

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
    """One region's answer within `timeout` in all, however the region paces its
    bytes: the request, the headers and the body share one deadline (a per-read
    timeout let a region that drips one byte at a time hold the thread and its
    socket long after the page answered). Connecting, and a TLS handshake (one
    deadline of its own in the ssl module), are each bounded by `timeout` too."""
    deadline = time.monotonic() + timeout
    parts = urlsplit(url.rstrip("/"))
    try:
        connection = _connection(parts, timeout=timeout, deadline=deadline)
    except ValueError:  # not an http(s) URL, or a bad port
        return RegionAnswer(region_id=region_id, outcome=UNREACHABLE)
    try:
        try:
            connection.connect()
        except TimeoutError:
            return RegionAnswer(region_id=region_id, outcome=TIMEOUT)
        except OSError:  # refused, no route, no such host, a TLS failure
            return RegionAnswer(region_id=region_id, outcome=UNREACHABLE)
        connection.request("GET", f"{parts.path}/api/v1/tasks/{task_id}/locate",
                           headers={"Authorization": f"Bearer {assertion}", "Accept": "application/json"})
        response = connection.getresponse()
        body = response.read(_ANSWER_MAX + 1)
    except TimeoutError:  # before its answer, or in the middle of it
        return RegionAnswer(region_id=region_id, outcome=TIMEOUT)
    except (http.client.HTTPException, OSError):  # not HTTP, or the connection dropped in the middle
        return RegionAnswer(region_id=region_id, outcome=ERROR)
    finally:
        connection.release()  # the socket ends with the ask, read to its end or not
    if response.status in (401, 403):
        return RegionAnswer(region_id=region_id, outcome=REFUSED)
    if response.status != 200 or len(body) > _ANSWER_MAX:
        return RegionAnswer(region_id=region_id, outcome=ERROR)
    return _answer_read(region_id=region_id, url=url, task_id=task_id, body=body)


class _DeadlineSocket:
    """A connected socket (plain or TLS) whose every wait ends at `deadline`:
    before each send and each receive its timeout is set to the time left, so
    the whole exchange, not each read, is bounded. http.client uses sendall,
    makefile and close of its socket, nothing else once connected."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock, self._deadline = sock, deadline

    def _wait_left(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self._sock.settimeout(left)

    def sendall(self, data) -> None:
        self._wait_left()
        self._sock.sendall(data)

    def recv_into(self, buffer) -> int:
        self._wait_left()
        return self._sock.recv_into(buffer)

    def makefile(self, mode: str = "rb", *args, **kwargs) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self))

    def close(self) -> None:
        """Nothing: http.client closes its socket as soon as the headers say the
        connection ends, and reads the body from it after (a real socket stays
        open while a file made from it is). _Deadlined.release() closes it."""

    def release(self) -> None:
        self._sock.close()


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: _DeadlineSocket):
        super().__init__()
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._sock.recv_into(buffer)


class _Deadlined:
    """An http.client connection whose socket, once connected, is a _DeadlineSocket."""

    def __init__(self, *args, deadline: float, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline, self._deadline_socket = deadline, None

    def connect(self) -> None:
        super().connect()  # over TLS, the handshake too: within the connect timeout
        self.sock = self._deadline_socket = _DeadlineSocket(self.sock, self._deadline)

    def release(self) -> None:
        """The connection and its socket closed, whatever was read."""
        self.close()
        if self._deadline_socket is not None:
            self._deadline_socket.release()
            self._deadline_socket = None


class _DeadlineHTTP(_Deadlined, http.client.HTTPConnection):
    pass


class _DeadlineHTTPS(_Deadlined, http.client.HTTPSConnection):
    pass


def _connection(parts, *, timeout: float, deadline: float) -> http.client.HTTPConnection:
    """No redirect is followed and no proxy from the environment is used: the
    router asks the region's own URL. A certificate is checked against the CA
    bundle requests would use for the router's other calls to regions."""
    if not parts.hostname or parts.scheme not in ("http", "https"):
        raise ValueError(parts.scheme)
    if parts.scheme == "https":
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or requests.certs.where()
        context = ssl.create_default_context(**{"capath" if os.path.isdir(bundle) else "cafile": bundle})
        return _DeadlineHTTPS(parts.hostname, parts.port, timeout=timeout, deadline=deadline, context=context)
    return _DeadlineHTTP(parts.hostname, parts.port, timeout=timeout, deadline=deadline)


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
