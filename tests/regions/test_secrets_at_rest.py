"""A secret is never at rest outside its region's processes: while tasks that
use it wait (no agent) or sit queued (an agent that is not consuming), a scan of
every key of the region's Redis and of every message on its broker finds no
secret value. The agent receives it only in the answer to its claim."""
from __future__ import annotations

import pytest
import redis
from kombu import Connection

from tests import harness
from tests.harness import REGISTRATION_TOKEN, wait_for

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-at-rest-7c41"


def _redis_dump(url: str) -> tuple[int, str]:
    """Every key and value of every type, as text."""
    client = redis.Redis.from_url(url)
    out, keys = [], 0
    for db in range(16):
        client = redis.Redis.from_url(url, db=db)
        for key in client.scan_iter(count=1000):
            keys += 1
            kind = client.type(key).decode()
            value = {"string": lambda: client.get(key), "hash": lambda: client.hgetall(key),
                     "list": lambda: client.lrange(key, 0, -1), "set": lambda: client.smembers(key),
                     "zset": lambda: client.zrange(key, 0, -1, withscores=True),
                     "stream": lambda: client.xrange(key)}.get(kind, lambda: b"")()
            out.append(f"{key!r} {value!r}")
    return keys, "\n".join(out)


def _broker_dump(url: str, queues: list[str]) -> tuple[int, str]:
    """Every message waiting on these queues (read, then given back)."""
    out, count = [], 0
    with Connection(url) as conn:
        channel = conn.channel()
        for queue in queues:
            taken = []
            while (message := channel.basic_get(queue, no_ack=False)) is not None:
                taken.append(message)
                out.append(f"{queue} {message.headers!r} {message.body!r}")
            count += len(taken)
            for message in taken:
                channel.basic_reject(message.delivery_tag, requeue=True)
        channel.close()
    return count, "\n".join(out)


def test_no_secret_value_rests_in_redis_or_the_broker_while_tasks_wait(fresh_region, tmp_path):
    region = fresh_region(INGEST_API_TOKEN=SECRET)
    commit = harness.config_repo(tmp_path / "config")
    sha = commit({"schema_version": 1, "tasks": {"data_ingestion": {"timeout": 60}},
                  "secrets": {"ingest_api_token": {"ref": "env:INGEST_API_TOKEN", "hosts": ["ingest.example.com"]}}})
    assert "applied" in region.manage("sync_config", "--repo", str(tmp_path / "config"), "--ref", sha)
    payload = {"source": "https://ingest.example.com/rows.jsonl", "auth_secret": "ingest_api_token",
               "schema": {"id": "int"}}

    # Waiting: nobody serves data_ingestion yet.
    waiting = region.submit("data_ingestion", payload)
    assert waiting["status"] == "waiting"
    # Queued: an agent that registered and beats but runs no worker (its queue fills).
    reg = region.session.post(f"{region.url}/api/v1/agents/register",
                              headers={"Authorization": f"Bearer {REGISTRATION_TOKEN}"},
                              json={"agent_id": "idle-1", "capabilities": ["data_ingestion"]})
    assert reg.status_code == 201, reg.text
    beat = region.session.post(f"{region.url}/api/v1/agents/idle-1/heartbeat", json={"busy": 0},
                               headers={"Authorization": f"Bearer {reg.json()['token']}"})
    assert beat.status_code == 200, beat.text
    queued = region.submit("data_ingestion", payload)
    assert queued["status"] == "queued"

    queue = "meridian.cap.data_ingestion"
    # The waiting task is handed out once an agent serves the capability; both sit on the broker.
    wait_for(lambda: region.vhost.queue_depths().get(queue, 0) >= 2, 20, what="both attempts on the broker")
    messages, on_broker = _broker_dump(region.vhost.url(),
                                       [q for q in region.vhost.queue_depths() if ".pidbox" not in q])
    keys, in_redis = _redis_dump(region.redis.url)
    assert messages >= 2 and queued["id"] in on_broker and waiting["id"] in on_broker
    assert keys >= 3 and "idle-1" in in_redis
    assert SECRET not in on_broker and SECRET not in in_redis
    assert "ingest_api_token" not in on_broker  # not even the reference: the claim answer carries it
