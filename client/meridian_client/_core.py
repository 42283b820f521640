"""The client's logic, written once for the sync and the async client.

Every operation is a generator that *describes* its I/O: it yields a
:class:`Send` (an HTTP request) and is sent back a :class:`Reply` or a
:class:`Failure`, yields a :class:`Sleep`, or yields an :class:`Emit` (a value
for an iterator such as ``as_completed``). ``Client`` drives these generators
with ``httpx.Client`` and ``time.sleep``, ``AsyncClient`` with
``httpx.AsyncClient`` and ``asyncio.sleep``: retries, redirects, long-poll
loops and error mapping exist once, here and in the modules this one builds
on (``_effects``: the steps; ``_caller``: one request, retried where safe),
and nothing here does I/O.
"""
from __future__ import annotations

import math
import uuid
from typing import Any, Callable, Iterable, Mapping, TypeVar

from meridian_client._caller import Caller, NeverSent
from meridian_client._effects import Emit, Gen, Reply, Sleep
from meridian_client._refs import FINAL, TASKS_PATH, RefState, final, region_url_from_task_url, task_outcome
from meridian_client._refusals import Refusal
from meridian_client._retry import backoff
from meridian_client.errors import (APIError, ForwardUncertain, MeridianError, NoRegion, NotFound, ServerError,
                                    TransportError, WaitTimeout, WorkflowCancelled, WorkflowFailed)

T = TypeVar("T")

MAX_WAIT = 60  # seconds, the server's bound for ?wait= and POST /api/v1/tasks/wait
MAX_WAIT_IDS = 1000  # ids per POST /api/v1/tasks/wait
GroupKey = tuple[str, tuple[tuple[str, Any], ...]]  # (base URL, sorted query) of one region


def _seconds(value: float) -> float:
    """A wait to ask the server for: whole tenths, rounded down (never past the caller's timeout)."""
    return max(0.0, math.floor(value * 10) / 10)


class _Missing(NotFound):
    """Tasks the many-wait did not find (not: the region has no many-wait)."""


class Core(Caller):
    """The operations of a client, on the state and the one request of :class:`Caller`."""

    # --- where a task lives ------------------------------------------------------------
    def where(self, ref: RefState) -> Gen[tuple[str, dict[str, Any]]]:
        """(base URL, query) for requests about a task: its region directly when
        known, else the router with ?region= (which redirects there)."""
        if ref.region_url:
            return ref.region_url, {}
        if ref.region_id and ref.region_id in self.region_urls:
            ref.region_url = self.region_urls[ref.region_id]
            return ref.region_url, {}
        info = yield from self.server_info()
        if info["role"] == "router":
            if not ref.region_id:
                raise ValueError(f"task {ref.task_id}: through the router a reference needs its region "
                                 f"(<region_id>/{ref.task_id})")
            return self.url, {"region": ref.region_id}
        if ref.region_id and info.get("region_id") and ref.region_id != info["region_id"]:
            raise NotFound(f"task {ref.region_id}/{ref.task_id} is not in region {info['region_id']} (this "
                           f"client's URL): use the router's URL", status=404, code="not_found")
        ref.region_id = ref.region_id or info.get("region_id")
        return self.url, {}

    def _took(self, ref: RefState, task: Any) -> dict[str, Any]:
        """Note a task's latest state on its reference (and where its region is)."""
        if not isinstance(task, dict):
            raise MeridianError(f"task {ref.task_id}: the server answered {str(task)[:200]!r}, not a task")
        ref.task = task
        if isinstance(task.get("region_id"), str):
            ref.region_id = ref.region_id or task["region_id"]
        url = region_url_from_task_url(task.get("url"))
        if url and not ref.region_url:
            ref.region_url = url
            if ref.region_id:
                self.region_urls.setdefault(ref.region_id, url)
        return task

    # --- one task --------------------------------------------------------------------
    def get(self, ref: RefState, *, wait: float | None = None) -> Gen[dict[str, Any]]:
        base, params = yield from self.where(ref)
        if wait is not None:
            params = {**params, "wait": wait}
        reply = yield from self.call("GET", f"{base}{TASKS_PATH}/{ref.task_id}", params=params, safe=True,
                                     read_timeout=(wait + self.timeout) if wait else None)
        return self._took(ref, reply.body)

    def action(self, ref: RefState, name: str) -> Gen[dict[str, Any]]:
        """cancel or retry: not repeated after a dropped connection (it may have happened)."""
        base, params = yield from self.where(ref)
        reply = yield from self.call("POST", f"{base}{TASKS_PATH}/{ref.task_id}/{name}", params=params, safe=False)
        return self._took(ref, reply.body)

    def wait(self, ref: RefState, *, timeout: float | None) -> Gen[dict[str, Any]]:
        """The task once final, long-polling (?wait=, at most 60 s a request) until
        ``timeout`` (None: no limit). A server that answers at once (no long-poll)
        is asked again after a short, growing pause."""
        if final(ref.task):
            return ref.task  # type: ignore[return-value]
        end = None if timeout is None else self.clock() + timeout
        pause = 0.1
        while True:
            left = MAX_WAIT if end is None else max(0.0, end - self.clock())
            wait = _seconds(min(MAX_WAIT, left))
            asked = self.clock()
            task = yield from self.get(ref, wait=wait)
            if final(task):
                return task
            remaining = None if end is None else end - self.clock()
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(f"task {ref.task_id} still {task.get('status')} after {timeout:g} s",
                                  task=task, pending=[ref])
            if self.clock() - asked < max(wait - 1, 0.05):  # answered early and not final: no long-poll here
                yield Sleep(pause if remaining is None else min(pause, remaining))
                pause = min(pause * 1.5, 2.0)

    def result(self, ref: RefState, *, timeout: float | None) -> Gen[Any]:
        task = yield from self.wait(ref, timeout=timeout)
        return task_outcome(task)

    # --- many tasks ----------------------------------------------------------------------
    def as_completed(self, refs: list[RefState], *, timeout: float | None) -> Gen[None]:
        """Emit each reference as its task becomes final (already-final ones first);
        WaitTimeout (with .pending) when ``timeout`` runs out first. One
        POST /api/v1/tasks/wait per region (up to 1000 ids) answers as soon as one
        of them is final; a region without it is polled."""
        end = None if timeout is None else self.clock() + timeout
        pending: dict[str, RefState] = {}
        for ref in refs:
            if final(ref.task):
                yield Emit(ref)
            else:
                pending[ref.task_id] = ref
        groups: dict[GroupKey, list[RefState]] = {}
        for ref in pending.values():
            base, params = yield from self.where(ref)
            groups.setdefault((base, tuple(sorted(params.items()))), []).append(ref)
        unsupported: set[GroupKey] = set()
        pause = 0.1
        while pending:
            left = None if end is None else end - self.clock()
            if left is not None and left <= 0:
                raise WaitTimeout(f"{len(pending)} of {len(refs)} task(s) not finished after {timeout:g} s",
                                  pending=list(pending.values()))
            live = [(key, [r for r in group if r.task_id in pending]) for key, group in groups.items()]
            live = [(key, group) for key, group in live if group]
            # One region: wait there as long as allowed. Several: a short wait each, in turn.
            longest = MAX_WAIT if len(live) == 1 else 1
            progressed = False
            asked = self.clock()
            for key, group in live:
                left = None if end is None else max(0.0, end - self.clock())
                wait = _seconds(min(longest, MAX_WAIT if left is None else left))
                if key not in unsupported:
                    try:
                        done = yield from self._wait_many(key, group[:MAX_WAIT_IDS], wait)
                    except APIError as exc:
                        if exc.status not in (404, 405) or isinstance(exc, _Missing):
                            raise
                        unsupported.add(key)  # an older region: poll it
                        done = []
                else:
                    done = []
                    for ref in group:
                        task = yield from self.get(ref)
                        if final(task):
                            done.append(ref)
                for ref in done:
                    if pending.pop(ref.task_id, None) is not None:
                        progressed = True
                        yield Emit(ref)
            if pending and not progressed and self.clock() - asked < 0.5:
                left = None if end is None else max(0.0, end - self.clock())
                yield Sleep(pause if left is None else min(pause, left))
                pause = min(pause * 1.5, 2.0)

    def _wait_many(self, key: GroupKey, group: list[RefState], wait: float) -> Gen[list[RefState]]:
        base, params = key[0], dict(key[1])
        by_id = {ref.task_id: ref for ref in group}
        reply = yield from self.call("POST", f"{base}{TASKS_PATH}/wait", params=params, safe=True,
                                     json={"ids": list(by_id), "wait": wait},
                                     read_timeout=wait + self.timeout)
        body = reply.body if isinstance(reply.body, dict) else {}
        missing = [str(task_id) for task_id in body.get("missing") or []]
        if missing:  # waiting on them would never end
            raise _Missing(f"no task {', '.join(missing[:10])}{' …' if len(missing) > 10 else ''} at {base}",
                           status=404, code="not_found", body={"missing": missing}, url=reply.url)
        done = []
        for task in body.get("done") or []:
            ref = by_id.get(str(task.get("id"))) if isinstance(task, dict) else None
            if ref is not None:
                self._took(ref, task)
                if final(task):
                    done.append(ref)
        return done

    # --- submitting ------------------------------------------------------------------------
    def submission(self, capability: str, payload: Mapping[str, Any] | None = None, *,
                   residency: str | None = None, region: str | None = None, priority: int | None = None,
                   timeout: int | None = None, max_attempts: int | None = None, idempotency_key: str | None = None,
                   require_agent: bool = False, callback_url: str | None = None) -> dict[str, Any]:
        """The body of a submission; every one carries an idempotency key (a new
        uuid4 when none is given), so sending it again never makes a second task."""
        body: dict[str, Any] = {"capability": capability, "payload": dict(payload or {}),
                                "idempotency_key": idempotency_key or uuid.uuid4().hex}
        for name, value in (("residency", residency), ("region", region), ("priority", priority),
                            ("timeout", timeout), ("max_attempts", max_attempts), ("callback_url", callback_url)):
            if value is not None:
                body[name] = value
        if require_agent:
            body["require_agent"] = True
        return body

    def submit(self, body: dict[str, Any], *, direct: bool, new_ref: Callable[..., T]) -> Gen[T]:
        if direct:
            info = yield from self.server_info()
            if info["role"] == "router":
                return (yield from self._submit_direct(body, new_ref=new_ref))
        reply = yield from self._pinned_on_uncertainty("POST", f"{self.url}{TASKS_PATH}", body)
        return (yield from self._ref_from_submit(reply.body, new_ref=new_ref))

    def _pinned_on_uncertainty(self, method: str, url: str, body: dict[str, Any]) -> Gen[Reply]:
        """Send a submission (with its keys). Idempotency keys are kept per region,
        so through the router a submission is sent again only where the first
        one may have landed: after a 504 (the region may have it) or a region's
        5xx relayed by the router, pinned to that region, where the key makes it
        a replay, never a second task. A dropped connection to the router with
        nothing pinned is not retried (the task may be in any region): the
        TransportError says so."""
        info = yield from self.server_info()
        via_router = info["role"] == "router"
        end = self.clock() + self.deadline
        attempt = 0
        while True:
            pinned = not via_router or "region" in body
            try:
                return (yield from self.call(method, url, json=body, safe=pinned,
                                             within=max(0.0, end - self.clock())))
            except ServerError as exc:
                region_id = exc.body.get("region_id")
                if (pinned and not isinstance(exc, ForwardUncertain)) or not isinstance(region_id, str) \
                        or self.clock() >= end:
                    raise
                body = {**body, "region": region_id}
            except TransportError as exc:
                if pinned:
                    raise
                raise TransportError(f"{exc}; the router may have sent the submission to a region before the "
                                     "connection dropped, so it was not sent again unpinned (idempotency keys are "
                                     f"kept per region): check with the same idempotency_key "
                                     f"{body.get('idempotency_key')!r} pinned to a region") from exc
                delay = backoff(attempt, base=self.backoff_base, cap=self.backoff_cap, rand=self.rand)
                if self.clock() + delay > end:
                    raise
                yield Sleep(delay)
                attempt += 1

    def _submit_direct(self, body: dict[str, Any], *, new_ref: Callable[..., T]) -> Gen[T]:
        """Route at the router, then submit to the region itself: the payload never
        crosses the router. The next candidate only when the connection to one
        was never made (then it cannot have the task)."""
        params: dict[str, Any] = {"capability": body["capability"], "count": 50 if body.get("region") else 5}
        if body.get("residency"):
            params["residency"] = body["residency"]
        reply = yield from self.call("GET", f"{self.url}/api/v1/route", params=params, safe=True)
        regions = [r for r in (reply.body or {}).get("regions", [])
                   if not body.get("region") or r.get("region_id") == body["region"]]
        if not regions:
            raise NoRegion(f"no region {body['region']} among those serving {body['capability']}", status=503,
                           code="unavailable", body={"skipped": (reply.body or {}).get("skipped", {})})
        item = {k: v for k, v in body.items() if k not in ("residency", "region")}
        last: NeverSent | None = None
        for candidate in regions:
            url = candidate["orchestrator_url"].rstrip("/")
            try:
                answer = yield from self.call("POST", f"{url}{TASKS_PATH}", json=item, safe=True, failover=True)
            except NeverSent as exc:
                last = exc
                continue
            self.region_urls[candidate["region_id"]] = url
            return (yield from self._ref_from_submit(answer.body, new_ref=new_ref,
                                                     region_id=candidate["region_id"], region_url=url))
        assert last is not None
        raise TransportError(f"no routed region could be reached: {last}") from last.failure.error

    def _ref_from_submit(self, body: Any, *, new_ref: Callable[..., T], region_id: str | None = None,
                         region_url: str | None = None) -> Gen[T]:
        if isinstance(body, dict) and isinstance(body.get("task"), dict) and "regional_orchestrator_url" in body:
            region_id, region_url, body = body["region_id"], body["regional_orchestrator_url"], body["task"]
        if not isinstance(body, dict) or "id" not in body:
            raise MeridianError(f"the server answered {str(body)[:200]!r}, not a task")
        region_id = region_id or body.get("region_id")
        region_url = region_url or region_url_from_task_url(body.get("url"))
        if not region_id:
            info = yield from self.server_info()
            region_id = info.get("region_id") if info["role"] == "region" else None
        if region_id and region_url:
            self.region_urls.setdefault(region_id, region_url)
        return new_ref(task_id=str(body["id"]), region_id=region_id, region_url=region_url, task=body)

    def submit_many(self, items: Iterable[Mapping[str, Any]], *, residency: str | None, region: str | None,
                    new_ref: Callable[..., T]) -> Gen[list[T | Refusal]]:
        """One POST /api/v1/tasks/batch (router: forwarded whole to one region)."""
        tasks = []
        for item in items:
            item = dict(item)
            if "capability" not in item:
                raise ValueError(f"each item needs a capability: {item!r}")
            item.setdefault("payload", {})
            item["idempotency_key"] = item.get("idempotency_key") or uuid.uuid4().hex
            tasks.append(item)
        if not tasks:
            return []
        body: dict[str, Any] = {"tasks": tasks}
        if residency:
            body["residency"] = residency
        if region:
            body["region"] = region
        reply = yield from self._pinned_on_uncertainty("POST", f"{self.url}{TASKS_PATH}/batch", body)
        answer = reply.body if isinstance(reply.body, dict) else {}
        region_id, region_url = None, None
        if isinstance(answer.get("batch"), dict):
            region_id, region_url, answer = answer["region_id"], answer["regional_orchestrator_url"], answer["batch"]
        out: list[T | Refusal] = []
        for position, result in enumerate(answer.get("results") or []):
            index = result.get("index", position)
            task = result.get("task")
            if isinstance(task, dict) and result.get("status") in (200, 201):
                ref = yield from self._ref_from_submit(task, new_ref=new_ref, region_id=region_id,
                                                       region_url=region_url)
                out.append(ref)
            else:
                out.append(Refusal(index=index, status=int(result.get("status") or 400),
                                   error=str(result.get("error") or "invalid"), detail=result.get("detail")))
        return out

    def route(self, capability: str, *, residency: str | None, count: int | None = None) -> Gen[dict[str, Any]]:
        params: dict[str, Any] = {"capability": capability}
        if residency:
            params["residency"] = residency
        if count:
            params["count"] = count
        reply = yield from self.call("GET", f"{self.url}/api/v1/route", params=params, safe=True)
        return reply.body if isinstance(reply.body, dict) else {}

    # --- workflows (at a region: the router does not take them) --------------------------
    def workflow_submit(self, steps: Iterable[Mapping[str, Any]], *,
                        idempotency_key: str | None) -> Gen[dict[str, Any]]:
        """POST /api/v1/workflows, with an idempotency key (a new one when None), so
        it is sent again after a dropped connection and never makes two workflows."""
        body = {"steps": [dict(step) for step in steps], "idempotency_key": idempotency_key or uuid.uuid4().hex}
        reply = yield from self.call("POST", f"{self.url}{WORKFLOWS_PATH}", json=body, safe=True)
        return _workflow(reply.body)

    def workflow_get(self, workflow_id: str) -> Gen[dict[str, Any]]:
        reply = yield from self.call("GET", f"{self.url}{WORKFLOWS_PATH}/{_workflow_id(workflow_id)}", safe=True)
        return _workflow(reply.body)

    def workflow_action(self, workflow_id: str, name: str) -> Gen[dict[str, Any]]:
        """cancel or retry: not repeated after a dropped connection (it may have happened)."""
        reply = yield from self.call("POST", f"{self.url}{WORKFLOWS_PATH}/{_workflow_id(workflow_id)}/{name}",
                                     safe=False)
        return _workflow(reply.body)

    def workflow_wait(self, workflow_id: str, *, timeout: float | None) -> Gen[dict[str, Any]]:
        """The workflow once final, polled after a short, growing pause (at most 2 s);
        WaitTimeout after ``timeout`` seconds (None: no limit)."""
        end = None if timeout is None else self.clock() + timeout
        pause = 0.1
        while True:
            workflow = yield from self.workflow_get(workflow_id)
            if workflow.get("status") in FINAL:
                return workflow
            remaining = None if end is None else end - self.clock()
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(f"workflow {workflow.get('id')} still {workflow.get('status')} after "
                                  f"{timeout:g} s", task=workflow)
            yield Sleep(pause if remaining is None else min(pause, remaining))
            pause = min(pause * 1.5, 2.0)

    def workflow_result(self, workflow_id: str, *, timeout: float | None) -> Gen[Any]:
        workflow = yield from self.workflow_wait(workflow_id, timeout=timeout)
        if workflow.get("status") == "succeeded":
            return workflow.get("result")
        if workflow.get("status") == "cancelled":
            raise WorkflowCancelled(f"workflow {workflow.get('id')} was cancelled", workflow=workflow)
        raise WorkflowFailed(f"workflow {workflow.get('id')} failed: {workflow.get('error') or 'failed'}",
                             workflow=workflow)


WORKFLOWS_PATH = "/api/v1/workflows"


def _workflow_id(workflow: str | Mapping[str, Any]) -> str:
    """A workflow's id, from the id or the workflow's state as answered."""
    text = workflow.get("id") if isinstance(workflow, Mapping) else workflow
    try:
        return str(uuid.UUID(str(text)))
    except ValueError:
        raise ValueError(f"{text!r} is not a workflow id (a uuid)") from None


def _workflow(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or "id" not in body or "steps" not in body:
        raise MeridianError(f"the server answered {str(body)[:200]!r}, not a workflow")
    return body
