"""The event-loop half of waiting (project/waiting.py): a worker's WaitHub on the
real Redis, and held_answer's wake-ups, deadline, limits and disconnects. The
database check is a plain function here (which ids are final); the real one,
and the whole path through gunicorn, are in test_task_wait.py."""
import asyncio
import time

import pytest
import redis
from django.conf import settings

from project.waiting import WaitAsk, WaitHub, held_answer


def hub_for(*, check=lambda ids: set(), redis_url: str | None = None, **limits) -> WaitHub:
    options = dict(max_waiters=100, max_ids=1000, max_bytes=1 << 20, recheck_seconds=60.0)
    return WaitHub(redis_url=redis_url or settings.REDIS_URL, channel="m:test:task-finished", check=check,
                   **{**options, **limits})


async def until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def publish(ids: str) -> None:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        client.publish("m:test:task-finished", ids)
    finally:
        client.close()


def test_a_published_id_wakes_its_waiters_and_no_other():
    async def scenario():
        hub = hub_for()
        a, b = hub.admit(("t-a",)), hub.admit(("t-b", "t-c"))
        try:
            await until(lambda: hub.connected, 10, "the subscription")
            publish("t-x t-c")
            assert await asyncio.wait_for(b.future, 10) == "woken"
            assert not a.future.done()
        finally:
            await hub.stop()

    asyncio.run(scenario())


def test_a_finish_nobody_heard_is_found_by_the_check_when_the_subscription_comes_up():
    """Finished between the view's read and the subscription (or while it was
    down): the check on (re)connect wakes the waiter."""
    asked = []

    def check(ids):
        asked.append(list(ids))
        return {"t-a"}

    async def scenario():
        hub = hub_for(check=check)
        waiter = hub.admit(("t-a",))
        try:
            assert await asyncio.wait_for(waiter.future, 10) == "woken"
            assert hub.connected and asked[0] == ["t-a"]
        finally:
            await hub.stop()

    asyncio.run(scenario())


def test_with_redis_unreachable_the_periodic_recheck_still_wakes_waiters():
    finished: set[str] = set()

    async def scenario():
        hub = hub_for(check=lambda ids: finished & set(ids), redis_url="redis://127.0.0.1:1/0", recheck_seconds=0.2)
        waiter = hub.admit(("t-a", "t-b"))
        try:
            await asyncio.sleep(0.5)
            assert not waiter.future.done() and not hub.connected
            finished.add("t-b")
            assert await asyncio.wait_for(waiter.future, 5) == "woken"
            assert hub.checks >= 2
        finally:
            await hub.stop()

    asyncio.run(scenario())


def test_a_failing_check_is_not_an_error_and_later_checks_go_on():
    calls = []

    def check(ids):
        calls.append(ids)
        if len(calls) < 3:
            raise RuntimeError("database away")
        return {"t-a"}

    async def scenario():
        hub = hub_for(check=check, redis_url="redis://127.0.0.1:1/0", recheck_seconds=0.1)
        waiter = hub.admit(("t-a",))
        try:
            assert await asyncio.wait_for(waiter.future, 5) == "woken"
        finally:
            await hub.stop()

    asyncio.run(scenario())


def test_the_check_goes_in_batches():
    batches = []

    async def scenario():
        hub = hub_for(check=lambda ids: batches.append(len(ids)) or set(), redis_url="redis://127.0.0.1:1/0",
                      check_batch=2)
        hub.admit(("a", "b", "c"))
        hub.admit(("c", "d", "e"))
        try:
            await hub.check_now()
        finally:
            await hub.stop()

    asyncio.run(scenario())
    assert batches == [2, 2, 1]


def test_a_worker_holds_no_more_than_its_limits_and_release_frees_them():
    async def scenario():
        hub = hub_for(redis_url="redis://127.0.0.1:1/0", max_waiters=2, max_ids=3, max_bytes=100)
        try:
            one = hub.admit(("a",), size=10)
            assert hub.admit(("b", "c", "d")) is None  # ids: 1 + 3 > 3
            assert hub.admit(("b",), size=91) is None  # bytes: 10 + 91 > 100
            two = hub.admit(("b", "c"), size=90)
            assert hub.admit(("x",)) is None  # waiters: 2
            hub.release(one)
            hub.release(two)
            assert (hub.waiters, hub.ids_held, hub.bytes_held, hub.by_id) == (0, 0, 0, {})
            assert hub.admit(("x",)) is not None
        finally:
            await hub.stop()

    asyncio.run(scenario())


def never_disconnects():
    async def receive():
        await asyncio.Event().wait()
    return receive


def test_held_answer_reruns_when_woken_and_answers_with_the_final_state():
    async def scenario():
        hub = hub_for(redis_url="redis://127.0.0.1:1/0")
        runs = []

        def rerun():
            runs.append(1)
            return ("pending again", WaitAsk(ids=("t-a",), seconds=30)) if len(runs) == 1 else ("final", None)

        loop = asyncio.get_running_loop()
        held = asyncio.ensure_future(held_answer(hub, first="first", ask=WaitAsk(ids=("t-a",), seconds=30),
                                                 deadline=loop.time() + 30, size=0, rerun=rerun,
                                                 receive=never_disconnects()))
        try:
            await until(lambda: hub.waiters == 1, 5, "the waiter")
            hub.wake(["t-a"])  # woken, re-run: still pending, so it waits on
            await until(lambda: len(runs) == 1, 5, "a re-run")
            assert not held.done()
            hub.wake(["t-a"])
            assert await asyncio.wait_for(held, 5) == "final"
            assert hub.waiters == 0 and hub.by_id == {}
        finally:
            await hub.stop()

    asyncio.run(scenario())


def test_held_answer_at_the_deadline_answers_with_the_state_then():
    async def scenario():
        hub = hub_for(redis_url="redis://127.0.0.1:1/0")
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = await held_answer(hub, first="stale", ask=WaitAsk(ids=("t-a",), seconds=0.3),
                                   deadline=started + 0.3, size=0,
                                   rerun=lambda: ("current", WaitAsk(ids=("t-a",), seconds=0.3)),
                                   receive=never_disconnects())
        assert answer == "current" and loop.time() - started >= 0.3
        assert hub.waiters == 0
        await hub.stop()

    asyncio.run(scenario())


def test_held_answer_drops_the_waiter_of_a_client_that_went_away():
    async def scenario():
        hub = hub_for(redis_url="redis://127.0.0.1:1/0")

        async def receive():
            await asyncio.sleep(0.2)
            return {"type": "http.disconnect"}

        loop = asyncio.get_running_loop()
        answer = await held_answer(hub, first="first", ask=WaitAsk(ids=("t-a",), seconds=30),
                                   deadline=loop.time() + 30, size=0, rerun=lambda: pytest.fail("re-run"),
                                   receive=receive)
        assert answer is None and hub.waiters == 0 and hub.by_id == {}
        await hub.stop()

    asyncio.run(scenario())


def test_held_answer_answers_at_once_when_the_worker_is_full_or_there_is_no_hub():
    async def scenario():
        hub = hub_for(redis_url="redis://127.0.0.1:1/0", max_waiters=0)
        loop = asyncio.get_running_loop()
        for which in (hub, None):
            answer = await held_answer(which, first="first", ask=WaitAsk(ids=("t-a",), seconds=30),
                                       deadline=loop.time() + 30, size=0, rerun=lambda: pytest.fail("re-run"),
                                       receive=never_disconnects())
            assert answer == "first"
        await hub.stop()

    asyncio.run(scenario())
