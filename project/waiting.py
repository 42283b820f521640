"""Long-polls held on the event loop: `GET /api/v1/tasks/<id>?wait=` and
`POST /api/v1/tasks/wait` hold no web worker and no database connection while
they wait.

How a wait runs (project/asgi.py drives it):
1. The request runs through Django as any other. A view that would wait (the
   task is not final and `wait` > 0) answers as usual and asks to be held
   (wait_ask: a note in the WSGI environ, never a header a client could send or
   see).
2. The ASGI layer does not send that answer. It registers the ids with this
   worker's WaitHub and awaits a wake-up for any of them, the client's
   disconnect, or the deadline, on the loop: the worker serves other requests
   meanwhile.
3. On a wake-up it runs the same request through Django again: a final answer
   is sent; one that still asks to wait waits on. At the deadline it runs the
   request once more and sends what it says (the current state).

Wake-ups: when a task reaches a final state the region publishes its id on a
per-region Redis channel after the commit
(regions.services.task_events.task_finished_publish); each worker keeps ONE
subscription to it (started with the first waiter, reconnecting with backoff).

Nothing is missed between a view's read and the subscription:
- the view's read, the registration and any message's handling all happen on
  the loop thread, and the registration follows the read with no await in
  between: a finish committed after the read is handled after the
  registration, so it wakes the waiter;
- while the subscription is down or (re)connecting, messages are lost: on every
  (re)connect, and every WAIT_RECHECK_SECONDS as a safety net whatever the
  subscription says, the hub asks the database which of the ids it holds are
  final (one query per batch of 250 ids, not one per waiter; the loop serves
  requests between batches) and wakes those. With Redis down, waiting
  degrades to these checks: later answers, never an error.

Bounded: past WAIT_MAX_WAITERS waiters, WAIT_MAX_IDS ids or WAIT_MAX_BYTES of
held request bodies per worker, a new wait is answered at once with the
current state (the client asks again); a waiter whose client disconnects is
dropped at once. A graceful stop (SIGTERM) answers every waiter at once with
its current state.
"""
from __future__ import annotations

import asyncio
import logging
import random
import signal
import threading
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable

logger = logging.getLogger(__name__)

WAIT_KEY = "meridian.wait"  # the WSGI environ key a view sets to be held
MAX_WAIT_SECONDS = 60


@dataclass(frozen=True)
class WaitAsk:
    """What a view asks of the ASGI layer: hold my answer until one of `ids`
    finishes or `seconds` (from the request's arrival) pass."""

    ids: tuple[str, ...]
    seconds: float


def wait_ask(request, *, ids: Iterable, seconds: float) -> None:
    """Called by a view whose answer may be held (see the module docstring).
    Outside project/asgi.py (the test client, a WSGI server) nothing holds it:
    the answer goes at once, which is still a correct answer. A wait is held at
    most WAIT_HOLD_MAX_SECONDS (under a proxy's idle timeout): the answer is then
    the current state, as at any deadline, and the client asks again."""
    from django.conf import settings

    request.META[WAIT_KEY] = WaitAsk(ids=tuple(str(i) for i in ids),
                                     seconds=min(float(seconds), settings.WAIT_HOLD_MAX_SECONDS))


def wait_asked(environ: dict) -> WaitAsk | None:
    ask = environ.get(WAIT_KEY)
    return ask if isinstance(ask, WaitAsk) and ask.ids and ask.seconds > 0 else None


WOKEN, DEADLINE, GONE = "woken", "deadline", "gone"


class Waiter:
    """One held request. Small on purpose: thousands live on a worker for up to a
    minute, and every object they hold is one more for each full garbage
    collection to walk (a pause of the whole worker: heartbeats wait through
    it). So one future per wait, ended by whichever comes first: a wake-up,
    the deadline's timer or the disconnect watcher's callback; no task or
    Event of its own."""

    __slots__ = ("ids", "size", "future")

    def __init__(self, ids: tuple[str, ...], size: int):
        self.ids, self.size = ids, size
        self.future: asyncio.Future = asyncio.get_running_loop().create_future()

    def end(self, why: str) -> None:
        if not self.future.done():
            self.future.set_result(why)

    def woken(self) -> None:
        self.end(WOKEN)

    def deadline(self) -> None:
        self.end(DEADLINE)

    def gone(self, _watcher=None) -> None:
        self.end(GONE)


class WaitHub:
    """The waiters of one web worker, by task id, and the one subscription that
    wakes them. Everything here runs on the worker's event loop thread."""

    def __init__(self, *, redis_url: str, channel: str, check: Callable[[list[str]], Iterable[str]],
                 max_waiters: int, max_ids: int, max_bytes: int, recheck_seconds: float,
                 check_batch: int = 250, health_seconds: float = 15.0):
        self.redis_url, self.channel, self.check = redis_url, channel, check
        self.max_waiters, self.max_ids, self.max_bytes = max_waiters, max_ids, max_bytes
        self.recheck_seconds, self.check_batch, self.health_seconds = recheck_seconds, check_batch, health_seconds
        self.by_id: dict[str, set[Waiter]] = {}
        self.waiters = self.ids_held = self.bytes_held = 0
        self.connected = False
        self.checks = 0  # database checks run (tests and the benchmark read it)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self._soon: asyncio.Event | None = None
        self._check_failing = False
        self.closing = False

    # --- waiters ---------------------------------------------------------------
    def admit(self, ids: tuple[str, ...], size: int = 0) -> Waiter | None:
        """A new waiter on `ids`, or None when this worker holds its limit."""
        if (self.closing or self.waiters >= self.max_waiters or self.ids_held + len(ids) > self.max_ids
                or self.bytes_held + size > self.max_bytes):
            return None
        self._start()
        waiter = Waiter((), size)
        self.waiters += 1
        self.bytes_held += size
        self._watch(waiter, ids)
        return waiter

    def rearm(self, waiter: Waiter, ids: tuple[str, ...]) -> None:
        """The waiter waits on (again) for `ids`: what is still pending after a re-run."""
        self._unwatch(waiter)
        waiter.future = asyncio.get_running_loop().create_future()
        self._watch(waiter, ids)

    def release(self, waiter: Waiter) -> None:
        self._unwatch(waiter)
        self.waiters -= 1
        self.bytes_held -= waiter.size

    def _watch(self, waiter: Waiter, ids: tuple[str, ...]) -> None:
        waiter.ids = tuple(dict.fromkeys(ids))
        self.ids_held += len(waiter.ids)
        for task_id in waiter.ids:
            self.by_id.setdefault(task_id, set()).add(waiter)

    def _unwatch(self, waiter: Waiter) -> None:
        self.ids_held -= len(waiter.ids)
        for task_id in waiter.ids:
            holders = self.by_id.get(task_id)
            if holders is not None:
                holders.discard(waiter)
                if not holders:
                    del self.by_id[task_id]
        waiter.ids = ()

    def wake(self, ids: Iterable[str]) -> int:
        woken = 0
        for task_id in ids:
            for waiter in self.by_id.get(task_id, ()):
                waiter.woken()
                woken += 1
        return woken

    # --- the subscription and the safety net ---------------------------------------
    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop and all(not t.done() for t in self._tasks):
            return
        for task in self._tasks:
            task.cancel()
        self._loop, self._soon = loop, asyncio.Event()
        self._tasks = [loop.create_task(self._listen(), name="wait-hub-listen"),
                       loop.create_task(self._rechecks(), name="wait-hub-rechecks")]
        self._answer_all_on_sigterm(loop)

    def _answer_all_on_sigterm(self, loop: asyncio.AbstractEventLoop) -> None:
        """A graceful stop (gunicorn sends its workers SIGTERM) answers every
        waiter at once with its current state, as its deadline would: the
        server waits for open requests before it exits, and without this a
        restart would take the whole graceful timeout and end the waiters
        with a reset. Chained before the server's own handler (uvicorn's),
        and only when there is one."""
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous) or getattr(previous, "wait_hub", None) is self:
            return

        def on_sigterm(signum, frame):
            loop.call_soon_threadsafe(self.answer_all)  # not here: a signal lands between any two bytecodes
            previous(signum, frame)

        on_sigterm.wait_hub = self
        signal.signal(signal.SIGTERM, on_sigterm)

    def answer_all(self) -> None:
        """Every waiter answers now with its current state; no new one is held."""
        self.closing = True
        for holders in list(self.by_id.values()):
            for waiter in list(holders):
                waiter.deadline()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        self.connected = False

    async def _listen(self) -> None:
        import redis.asyncio as aioredis

        backoff = 0.2
        while True:
            client = pubsub = None
            try:
                client = aioredis.Redis.from_url(self.redis_url, socket_connect_timeout=2, socket_keepalive=True,
                                                 decode_responses=True)
                pubsub = client.pubsub()
                await pubsub.subscribe(self.channel)
                heard = asyncio.get_running_loop().time()
                while True:
                    message = await pubsub.get_message(timeout=self.health_seconds)
                    now = asyncio.get_running_loop().time()
                    if message is None:
                        # A silent connection (a partition sends no RST): ping,
                        # and give up on it when even the pong does not come.
                        if now - heard > 2 * self.health_seconds:
                            raise ConnectionError("no answer from Redis")
                        await pubsub.ping()
                        continue
                    heard = now
                    kind = message.get("type")
                    if kind == "message":
                        self.wake(str(message.get("data") or "").split())
                    elif kind == "subscribe":
                        # What finished while nobody listened was not heard: look.
                        if not self.connected:
                            logger.info("task-finished subscription %s up", self.channel)
                        self.connected, backoff = True, 0.2
                        self._soon.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # redis errors, OSError: waiting goes on with the rechecks
                if self.connected:
                    logger.warning("task-finished subscription lost (%s); waiters fall back to rechecks every "
                                   "%ss until it is back", exc, self.recheck_seconds)
                self.connected = False
            finally:
                for closing in (pubsub, client):
                    if closing is not None:
                        try:
                            await closing.aclose()
                        except Exception:
                            pass
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, 5.0)

    async def _rechecks(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._soon.wait(), timeout=self.recheck_seconds)
            except asyncio.TimeoutError:
                pass
            self._soon.clear()
            if self.by_id:
                await self.check_now()

    async def check_now(self) -> None:
        """Ask the database which held ids are final, a batch at a time (the loop
        serves requests between batches), and wake their waiters."""
        ids = list(self.by_id)
        for start in range(0, len(ids), self.check_batch):
            batch = [task_id for task_id in ids[start:start + self.check_batch] if task_id in self.by_id]
            if not batch:
                continue
            try:
                finished = self.check(batch)
            except Exception as exc:  # the database is away: the deadline still answers
                if not self._check_failing:
                    logger.warning("waiters' recheck failed: %s", str(exc).splitlines()[0][:200] if str(exc) else exc)
                self._check_failing = True
                return
            self._check_failing = False
            self.checks += 1
            self.wake(finished)
            await asyncio.sleep(0)


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def held_answer(hub: WaitHub | None, *, first, ask: WaitAsk, deadline: float, size: int,
                      rerun: Callable[[], tuple[object, WaitAsk | None]], receive: Callable[[], Awaitable[dict]]):
    """The answer to send for a request whose view asked to wait: `first` when
    nothing can hold it (no hub in this role, the worker at its limit); else
    the answer of the first re-run that no longer asks to wait, or of the
    re-run at `deadline` (loop time). None when the client went away (nothing
    to send)."""
    loop = asyncio.get_running_loop()
    if hub is None or deadline <= loop.time():
        return first
    waiter = hub.admit(ask.ids, size)
    if waiter is None:
        return first
    watcher = loop.create_task(_disconnected(receive))
    watcher.add_done_callback(waiter.gone)
    timer = loop.call_at(deadline, waiter.deadline)
    try:
        while True:
            why = await waiter.future
            if why == GONE:
                return None
            if why == DEADLINE:
                break
            answer, again = rerun()
            if again is None:
                return answer
            hub.rearm(waiter, again.ids)
            # What ended while this waiter was not listening (its future was done):
            if watcher.done():
                return None
            if loop.time() >= deadline:
                break
        return rerun()[0]  # the state at the deadline
    finally:
        timer.cancel()
        watcher.remove_done_callback(waiter.gone)
        watcher.cancel()
        hub.release(waiter)
