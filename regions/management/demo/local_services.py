"""What the fleet needs around it: Redis for liveness, a broker per region
(a fresh RabbitMQ vhost each, or a Redis database each), the configuration
repository and the sample data that the agents read."""
from __future__ import annotations

import csv
import random
import shutil
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import redis
from django.conf import settings

from regions.management.demo.layout import REGIONS, DemoError


def _tcp_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _rabbitmqctl(*args: str) -> None:
    out = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
    if out.returncode:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {(out.stderr or out.stdout).strip()[:300]}")


def _rabbit_vhost_fresh(vhost: str) -> None:
    """Delete and re-create: a previous run's queues and messages are gone."""
    try:
        _rabbitmqctl("delete_vhost", vhost)
    except RuntimeError as exc:
        if "does not exist" not in str(exc) and "not_found" not in str(exc).lower():
            raise
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")


def brokers_prepare(*, mode: str, vhost_prefix: str, redis_base: str, say: Callable[[str], None]) -> dict[str, str]:
    """A broker URL per region: a fresh RabbitMQ vhost each, or a Redis database each."""
    problem = None
    if mode in ("auto", "rabbitmq"):
        if not shutil.which("rabbitmqctl"):
            problem = "rabbitmqctl is not installed"
        elif not _tcp_answers(5672):
            problem = "nothing answers on 127.0.0.1:5672"
        else:
            vhosts = {rid: f"{vhost_prefix}-{rid}" for rid, _, _ in REGIONS}
            try:
                with ThreadPoolExecutor(len(vhosts)) as pool:
                    list(pool.map(_rabbit_vhost_fresh, vhosts.values()))
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                problem = str(exc)
            else:
                say(f"broker: RabbitMQ on 127.0.0.1:5672, vhosts {', '.join(vhosts.values())}")
                return {rid: f"amqp://guest:guest@127.0.0.1:5672/{vhost}" for rid, vhost in vhosts.items()}
        if mode == "rabbitmq":
            raise DemoError(f"RabbitMQ is not usable: {problem}")
    urls = {}
    for n, (region_id, _, _) in enumerate(REGIONS):
        urls[region_id] = f"{redis_base}/{len(REGIONS) + 1 + n}"  # after the liveness databases
        redis.Redis.from_url(urls[region_id]).flushdb()  # a previous run's messages
    if problem:
        say(f"WARNING: RabbitMQ is not usable ({problem}); falling back to a Redis broker "
            f"({', '.join(urls.values())}). Redis is the weaker broker: acknowledgements are "
            f"emulated, and a message can wait out the visibility timeout after a crash.")
    else:
        say(f"broker: Redis ({', '.join(urls.values())})")
    return urls


def liveness_clear(*, url: str, region_id: str) -> None:
    """Forget a previous demo run's liveness keys (only this region's)."""
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"m:{region_id}:*"))
    if keys:
        client.delete(*keys)


def config_repo_create(*, root: Path, say: Callable[[str], None]) -> Path:
    """The example configuration repository as a real git repository, plus a
    demo commit on top (short intervals, so the demo is lively)."""
    repo = root / "config-repo"
    shutil.copytree(Path(settings.BASE_DIR) / "examples" / "config-repo", repo)

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.email=demo@meridian.local", "-c", "user.name=demo", *args],
                              cwd=repo, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", "Example configuration")
    text = (repo / "global.yaml").read_text()
    text = (text.replace("heartbeat_interval: 5 ", "heartbeat_interval: 2 ")
            .replace("heartbeat_ttl: 15 ", "heartbeat_ttl: 6  ").replace("summary_interval: 60 ", "summary_interval: 3  "))
    # Completion callbacks to receivers on this machine (examples/callback-receiver):
    # loopback, which a real deployment would not allow (docs/security.md).
    text = text.replace("callbacks:\n  allowed_hosts: []", 'callbacks:\n  allowed_hosts: ["127.0.0.1", "localhost"]')
    (repo / "global.yaml").write_text(text)
    (repo / "regions" / "us-east-1.yaml").write_text("summary_interval: 3\n")
    git("commit", "-q", "-am", "Demo: short heartbeat and summary intervals, callbacks to loopback receivers")
    sha = git("rev-parse", "HEAD")
    say(f"configuration repository {repo} at {sha[:12]}")
    return repo


def sample_data_write(*, data: Path, region_id: str) -> None:
    """The files the demo's tasks read in a region: a CSV to ingest and a log to compress."""
    data.mkdir(parents=True, exist_ok=True)
    rng = random.Random(region_id)
    with open(data / "readings.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sensor", "celsius", "ok"])
        for i in range(2000):
            celsius = "n/a" if i % 97 == 0 else f"{rng.uniform(-10, 40):.2f}"
            writer.writerow([f"{region_id}-s{i % 50}", celsius, rng.choice(["true", "false"])])
    (data / "archive.log").write_bytes(
        b"".join(f"{i} {region_id} event={rng.random():.6f}\n".encode() for i in range(40_000)))
