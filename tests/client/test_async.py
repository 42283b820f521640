"""AsyncClient, the asyncio twin, against the same real router and region."""
from __future__ import annotations

import asyncio

import pytest

from meridian_client import AsyncClient, AsyncTaskRef, TaskFailed

pytestmark = pytest.mark.integration


def test_the_async_client_submits_waits_and_raises_like_the_sync_one(fleet):
    async def scenario():
        async with AsyncClient(fleet.router.url, fleet.api_key, deadline=60) as client:
            ref = await client.submit("echo", {"async": 1}, residency="eu")
            assert isinstance(ref, AsyncTaskRef) and str(ref).startswith("eu-west-3/")
            direct = await client.submit("echo", {"async": 2}, residency="eu", direct=True)
            failing = await client.submit("fail", {"message": "async-boom"}, residency="eu", max_attempts=1)
            results = await asyncio.gather(ref.result(timeout=90), direct.result(timeout=90))
            assert [r["echo"] for r in results] == [{"async": 1}, {"async": 2}]
            with pytest.raises(TaskFailed) as caught:
                await failing.result(timeout=90)
            assert "async-boom" in caught.value.error and caught.value.attempts == 1
            batch = await client.submit_many([{"capability": "echo", "payload": {"b": i}} for i in range(3)],
                                             residency="eu")
            seen = [r.task_id async for r in client.as_completed(batch, timeout=90)]
            assert sorted(seen) == sorted(r.task_id for r in batch)
            assert (await client.task(str(ref)).status())["status"] == "succeeded"
            assert (await client.route("echo"))["regions"]

    asyncio.run(scenario())
