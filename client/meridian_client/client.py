"""``Client`` and ``AsyncClient``: the same API, sync and asyncio, over one core.

    from meridian_client import Client

    with Client("https://router.example.com", api_key) as client:
        ref = client.submit("echo", {"hello": "world"}, residency="eu")
        print(ref, ref.result(timeout=60))      # eu-west-3/0b6f…  {...}

``url`` may be the Global Task Router or one region's orchestrator. All the
logic (retries, redirects, long-polls, errors) lives in ``meridian_client._core``
and the private modules it builds on; this module only carries its requests
with httpx and sleeps.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Generic, Iterable, Iterator, Mapping, Sequence, TypeVar

from collections.abc import Generator

import httpx

from meridian_client._core import Core
from meridian_client._effects import Emit, Failure, Gen, Outcome, Reply, Send, Sleep, Step, reply_from
from meridian_client._refs import RefState, final, parse_ref
from meridian_client._refusals import Refusal

__all__ = ["Client", "AsyncClient", "TaskRef", "AsyncTaskRef", "Refusal"]

T = TypeVar("T")
DEFAULT_TIMEOUT = 30.0
DEFAULT_DEADLINE = 120.0
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


class _RefBase:
    """A task, wherever it runs: ``task_id``, ``region_id``, ``region_url`` and
    ``task`` (its latest state seen, or None). ``str(ref)`` is
    ``"<region_id>/<task_id>"``, which ``client.task()`` turns back into one."""

    def __init__(self, client: Any, *, task_id: str, region_id: str | None = None, region_url: str | None = None,
                 task: dict[str, Any] | None = None) -> None:
        self._client = client
        self.task_id = task_id
        self.region_id = region_id
        self.region_url = region_url
        self.task = task

    def __str__(self) -> str:
        return f"{self.region_id}/{self.task_id}" if self.region_id else self.task_id

    def __repr__(self) -> str:
        status = self.task.get("status") if self.task else "?"
        return f"<{type(self).__name__} {self} {status}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _RefBase) and other.task_id == self.task_id

    def __hash__(self) -> int:
        return hash(self.task_id)

    @property
    def done(self) -> bool:
        """True once the latest state seen is final (succeeded, failed, cancelled)."""
        return final(self.task)


class TaskRef(_RefBase):
    """A submitted task (sync). See :class:`_RefBase`."""

    _client: Client

    def status(self) -> dict[str, Any]:
        """The task as its region has it now (a dict: id, status, attempt, result, error, ...)."""
        return self._client._run(self._client._core.get(self))

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Block until the task is final and return it (whatever its outcome);
        WaitTimeout after ``timeout`` seconds (None: no limit)."""
        return self._client._run(self._client._core.wait(self, timeout=timeout))

    def result(self, timeout: float | None = None) -> Any:
        """Block until the task is final: its result, or TaskFailed (``.error``,
        ``.attempts``, ``.task``), TaskCancelled, or WaitTimeout after ``timeout`` s."""
        return self._client._run(self._client._core.result(self, timeout=timeout))

    def cancel(self) -> dict[str, Any]:
        """Cancel the task (Conflict if it already ended); returns its new state."""
        return self._client._run(self._client._core.action(self, "cancel"))

    def retry(self) -> dict[str, Any]:
        """Run a failed or cancelled task again (Conflict otherwise); returns its new state."""
        return self._client._run(self._client._core.action(self, "retry"))


class AsyncTaskRef(_RefBase):
    """A submitted task (asyncio): the same methods as :class:`TaskRef`, awaited."""

    _client: AsyncClient

    async def status(self) -> dict[str, Any]:
        return await self._client._run(self._client._core.get(self))

    async def wait(self, timeout: float | None = None) -> dict[str, Any]:
        return await self._client._run(self._client._core.wait(self, timeout=timeout))

    async def result(self, timeout: float | None = None) -> Any:
        return await self._client._run(self._client._core.result(self, timeout=timeout))

    async def cancel(self) -> dict[str, Any]:
        return await self._client._run(self._client._core.action(self, "cancel"))

    async def retry(self) -> dict[str, Any]:
        return await self._client._run(self._client._core.action(self, "retry"))


R = TypeVar("R", bound=_RefBase)


class _ClientBase(Generic[R]):
    _ref_class: type[R]

    def __init__(self, url: str, api_key: str, *, timeout: float = DEFAULT_TIMEOUT,
                 deadline: float = DEFAULT_DEADLINE) -> None:
        """``url``: the router or a region. ``timeout``: seconds for one HTTP request
        (a long poll adds its wait). ``deadline``: seconds within which one call
        retries (429, 503, dropped connections where safe) before raising."""
        self._core = Core(url=url, api_key=api_key, timeout=timeout, deadline=deadline)

    @property
    def url(self) -> str:
        return self._core.url

    def task(self, ref: str | _RefBase) -> R:
        """A reference from its text, ``"<region_id>/<uuid>"`` (a bare uuid when
        the client's URL is the task's region). No request is made."""
        if isinstance(ref, _RefBase):
            if isinstance(ref, self._ref_class) and ref._client is self:
                return ref
            return self._ref_class(self, task_id=ref.task_id, region_id=ref.region_id, region_url=ref.region_url,
                                   task=ref.task)
        region_id, task_id = parse_ref(ref)
        return self._ref_class(self, task_id=task_id, region_id=region_id,
                               region_url=self._core.region_urls.get(region_id) if region_id else None)

    def _new_ref(self, **fields: Any) -> R:
        return self._ref_class(self, **fields)

    def _timeouts(self, step: Send) -> httpx.Timeout:
        return httpx.Timeout(self._core.timeout, connect=min(self._core.timeout, 10.0),
                             read=step.read_timeout or self._core.timeout)


class Client(_ClientBase[TaskRef]):
    """The sync client. Use it as a context manager, or call ``close()``."""

    _ref_class = TaskRef

    def __init__(self, url: str, api_key: str, *, timeout: float = DEFAULT_TIMEOUT,
                 deadline: float = DEFAULT_DEADLINE, http: httpx.Client | None = None) -> None:
        super().__init__(url, api_key, timeout=timeout, deadline=deadline)
        self._http = http or httpx.Client(follow_redirects=False)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- the driver ------------------------------------------------------------------
    def _run(self, gen: Gen[T]) -> T:
        steps = self._steps(gen)
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                value: T = stop.value
                return value

    def _steps(self, gen: Gen[T]) -> Generator[Any, None, T]:
        """Carry out the operation's steps; yield what it emits; return its value."""
        outcome: Outcome = None
        while True:
            try:
                step = gen.send(outcome)
            except StopIteration as stop:
                value: T = stop.value
                return value
            outcome = None
            if isinstance(step, Emit):
                yield step.value
            elif isinstance(step, Sleep):
                time.sleep(step.seconds)
            else:
                outcome = self._send(step)

    def _send(self, step: Send) -> Reply | Failure:
        try:
            r = self._http.request(step.method, step.url, json=step.json, params=step.params,
                                   headers=self._core.headers, timeout=self._timeouts(step))
        except _NEVER_SENT as exc:
            return Failure(exc, connected=False)
        except httpx.TransportError as exc:
            return Failure(exc, connected=True)
        return reply_from(r.status_code, r.headers, r.content, str(r.url))

    # --- the API ----------------------------------------------------------------------
    def submit(self, capability: str, payload: Mapping[str, Any] | None = None, *, residency: str | None = None,
               region: str | None = None, priority: int | None = None, timeout: int | None = None,
               max_attempts: int | None = None, idempotency_key: str | None = None, require_agent: bool = False,
               direct: bool = False, callback_url: str | None = None) -> TaskRef:
        """Submit a task; returns its reference at once (``ref.result()`` waits).

        ``residency``/``region`` constrain where (at the router); ``priority`` 0-9,
        ``timeout`` seconds per attempt, ``max_attempts``; ``idempotency_key``
        (a new one when None: a retry after a timeout never runs it twice);
        ``require_agent``: refused (NoAgent) if no agent serves the capability;
        ``direct``: ask the router where, then submit to that region itself, so the
        payload never crosses the router; ``callback_url``: the region POSTs the
        final task there, signed (check it with :func:`verify_callback`)."""
        body = self._core.submission(capability, payload, residency=residency, region=region, priority=priority,
                                     timeout=timeout, max_attempts=max_attempts, idempotency_key=idempotency_key,
                                     require_agent=require_agent, callback_url=callback_url)
        return self._run(self._core.submit(body, direct=direct, new_ref=self._new_ref))

    def submit_many(self, items: Iterable[Mapping[str, Any]], *, residency: str | None = None,
                    region: str | None = None) -> list[TaskRef | Refusal]:
        """Submit many in one request (POST /api/v1/tasks/batch, up to 500): each
        item a dict like submit's arguments (capability, payload, priority, ...).
        One answer per item, in order: a TaskRef, or a Refusal (``.exception()``)."""
        return self._run(self._core.submit_many(items, residency=residency, region=region, new_ref=self._new_ref))

    def wait_all(self, refs: Sequence[TaskRef | str], timeout: float | None = None) -> list[dict[str, Any]]:
        """Block until every task is final; their states, in the order given.
        WaitTimeout (``.pending``) after ``timeout`` seconds."""
        tracked = [self.task(r) for r in refs]
        for _ in self.as_completed(tracked, timeout=timeout):
            pass
        return [ref.task or {} for ref in tracked]

    def as_completed(self, refs: Sequence[TaskRef | str], timeout: float | None = None) -> Iterator[TaskRef]:
        """Yield each reference as its task becomes final (``ref.result()`` then
        answers without a request). WaitTimeout (``.pending``) after ``timeout`` s."""
        tracked: list[RefState] = [self.task(r) for r in refs]
        yield from self._steps(self._core.as_completed(tracked, timeout=timeout))

    def route(self, capability: str, residency: str | None = None) -> dict[str, Any]:
        """The router's answer: which regions can take the capability, best first."""
        return self._run(self._core.route(capability, residency=residency))

    # --- workflows ----------------------------------------------------------------------
    def workflow(self, steps: Sequence[Mapping[str, Any]], *, idempotency_key: str | None = None) -> dict[str, Any]:
        """Submit a workflow to this client's region (not the router): ``steps`` in
        order, each a task ``{"capability", "payload", "priority", "timeout",
        "max_attempts"}`` or a group ``{"group": [task, ...]}`` run in parallel.
        A step's input is its payload merged with the previous step's result;
        after a group, its payload with ``"results"``, the members' results in
        order. Returns the workflow's state (``["id"]``, ``["steps"]``)."""
        return self._run(self._core.workflow_submit(steps, idempotency_key=idempotency_key))

    def workflow_status(self, workflow: str | Mapping[str, Any]) -> dict[str, Any]:
        """The workflow's state now: status, error (naming the failed step), result,
        and every step with its tasks' ids and statuses."""
        return self._run(self._core.workflow_get(workflow))

    def workflow_wait(self, workflow: str | Mapping[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Block until the workflow is final (succeeded, failed, cancelled); its
        state. WaitTimeout after ``timeout`` seconds."""
        return self._run(self._core.workflow_wait(workflow, timeout=timeout))

    def workflow_result(self, workflow: str | Mapping[str, Any], timeout: float | None = None) -> Any:
        """The last step's result (a list after a group), waiting for it;
        WorkflowFailed (naming the step) or WorkflowCancelled otherwise."""
        return self._run(self._core.workflow_result(workflow, timeout=timeout))

    def workflow_cancel(self, workflow: str | Mapping[str, Any]) -> dict[str, Any]:
        """Cancel the workflow: its active tasks are cancelled and no step starts."""
        return self._run(self._core.workflow_action(workflow, "cancel"))

    def workflow_retry(self, workflow: str | Mapping[str, Any]) -> dict[str, Any]:
        """Resume a failed or cancelled workflow: its failed and cancelled tasks
        run again and the steps after them follow."""
        return self._run(self._core.workflow_action(workflow, "retry"))


class AsyncClient(_ClientBase[AsyncTaskRef]):
    """The asyncio client: the same API as :class:`Client`, awaited
    (``as_completed`` is an async iterator). ``async with`` it, or ``await aclose()``."""

    _ref_class = AsyncTaskRef

    def __init__(self, url: str, api_key: str, *, timeout: float = DEFAULT_TIMEOUT,
                 deadline: float = DEFAULT_DEADLINE, http: httpx.AsyncClient | None = None) -> None:
        super().__init__(url, api_key, timeout=timeout, deadline=deadline)
        self._http = http or httpx.AsyncClient(follow_redirects=False)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- the driver ------------------------------------------------------------------
    async def _run(self, gen: Gen[T]) -> T:
        outcome: Outcome = None
        while True:
            try:
                step = gen.send(outcome)
            except StopIteration as stop:
                value: T = stop.value
                return value
            outcome = await self._do(step)

    async def _iterate(self, gen: Gen[Any]) -> AsyncIterator[Any]:
        outcome: Outcome = None
        while True:
            try:
                step = gen.send(outcome)
            except StopIteration:
                return
            if isinstance(step, Emit):
                outcome = None
                yield step.value
            else:
                outcome = await self._do(step)

    async def _do(self, step: Step) -> Outcome:
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            return None
        if isinstance(step, Emit):
            return None
        try:
            r = await self._http.request(step.method, step.url, json=step.json, params=step.params,
                                         headers=self._core.headers, timeout=self._timeouts(step))
        except _NEVER_SENT as exc:
            return Failure(exc, connected=False)
        except httpx.TransportError as exc:
            return Failure(exc, connected=True)
        return reply_from(r.status_code, r.headers, r.content, str(r.url))

    # --- the API ----------------------------------------------------------------------
    async def submit(self, capability: str, payload: Mapping[str, Any] | None = None, *,
                     residency: str | None = None, region: str | None = None, priority: int | None = None,
                     timeout: int | None = None, max_attempts: int | None = None,
                     idempotency_key: str | None = None, require_agent: bool = False,
                     direct: bool = False, callback_url: str | None = None) -> AsyncTaskRef:
        """See :meth:`Client.submit`."""
        body = self._core.submission(capability, payload, residency=residency, region=region, priority=priority,
                                     timeout=timeout, max_attempts=max_attempts, idempotency_key=idempotency_key,
                                     require_agent=require_agent, callback_url=callback_url)
        return await self._run(self._core.submit(body, direct=direct, new_ref=self._new_ref))

    async def submit_many(self, items: Iterable[Mapping[str, Any]], *, residency: str | None = None,
                          region: str | None = None) -> list[AsyncTaskRef | Refusal]:
        """See :meth:`Client.submit_many`."""
        return await self._run(self._core.submit_many(items, residency=residency, region=region,
                                                      new_ref=self._new_ref))

    async def wait_all(self, refs: Sequence[AsyncTaskRef | str], timeout: float | None = None) -> list[dict[str, Any]]:
        """See :meth:`Client.wait_all`."""
        tracked = [self.task(r) for r in refs]
        async for _ in self.as_completed(tracked, timeout=timeout):
            pass
        return [ref.task or {} for ref in tracked]

    def as_completed(self, refs: Sequence[AsyncTaskRef | str],
                     timeout: float | None = None) -> AsyncIterator[AsyncTaskRef]:
        """See :meth:`Client.as_completed` (``async for ref in client.as_completed(refs)``)."""
        tracked: list[RefState] = [self.task(r) for r in refs]
        return self._iterate(self._core.as_completed(tracked, timeout=timeout))

    async def route(self, capability: str, residency: str | None = None) -> dict[str, Any]:
        """See :meth:`Client.route`."""
        return await self._run(self._core.route(capability, residency=residency))

    # --- workflows ----------------------------------------------------------------------
    async def workflow(self, steps: Sequence[Mapping[str, Any]], *,
                       idempotency_key: str | None = None) -> dict[str, Any]:
        """See :meth:`Client.workflow`."""
        return await self._run(self._core.workflow_submit(steps, idempotency_key=idempotency_key))

    async def workflow_status(self, workflow: str | Mapping[str, Any]) -> dict[str, Any]:
        return await self._run(self._core.workflow_get(workflow))

    async def workflow_wait(self, workflow: str | Mapping[str, Any], timeout: float | None = None) -> dict[str, Any]:
        return await self._run(self._core.workflow_wait(workflow, timeout=timeout))

    async def workflow_result(self, workflow: str | Mapping[str, Any], timeout: float | None = None) -> Any:
        return await self._run(self._core.workflow_result(workflow, timeout=timeout))

    async def workflow_cancel(self, workflow: str | Mapping[str, Any]) -> dict[str, Any]:
        return await self._run(self._core.workflow_action(workflow, "cancel"))

    async def workflow_retry(self, workflow: str | Mapping[str, Any]) -> dict[str, Any]:
        return await self._run(self._core.workflow_action(workflow, "retry"))
