"""One router and one region (real gunicorn, orchestrator and agent processes)
shared by every client test of this package: the client, the CLI and the async
twin all run against them.

The region reaches its database through a TcpProxy (tests/faults.py), so a test
can make it answer 503 (database unavailable) and recover. A second router
knows the same region through a door: a relay that can deliver a request and
swallow the answer, as a region that accepts and never answers does (the
router's forward then ends in 504, uncertain). A second router, not a second
region id at the first: a router's assertion is good only at the region it
names, and the region trusts both routers' keys.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import pytest

from tests import harness
from tests.faults import TcpProxy
from tests.harness import wait_for


class AnswerEater:
    """A TCP relay to `target` that, for the next `swallow(n)` connections,
    delivers the request and drops the answer (the caller hears nothing)."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._to_swallow = 0
        self.swallowed = 0
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def swallow(self, n: int) -> None:
        with self._lock:
            self._to_swallow = n

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                drop = self._to_swallow > 0
                if drop:
                    self._to_swallow -= 1
                    self.swallowed += 1
            threading.Thread(target=self._relay, args=(client, drop), daemon=True).start()

    def _relay(self, client: socket.socket, drop: bool) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        self._open += [client, upstream]
        threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
        self._pump(upstream, client, drop)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, drop: bool) -> None:
        try:
            while data := src.recv(65536):
                if not drop:
                    dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        for s in [self.sock, *self._open]:
            try:
                s.close()
            except OSError:
                pass


@dataclass
class Fleet:
    router: harness.Router
    region: harness.Region
    db_proxy: TcpProxy
    door: AnswerEater
    door_router: harness.Router  # a second router, whose road to the region goes through the door
    api_key: str  # valid at both routers and at the region


@pytest.fixture(scope="package")
def fleet(region_template, router_template):
    router = harness.Router(router_template)
    # A forward that hears nothing gives up (504) within 3 s, not 10.
    router.env.update(ROUTER_FORWARD_BUDGET_SECONDS="3", ROUTER_FORWARD_CONNECT_TIMEOUT="1")
    router.start()
    # The door: a road to the region that can swallow answers. The router's assertion
    # is for the region it names, so the door is the region's road at a router of its
    # own (the region trusts both routers' keys, as while a key is rotated).
    door_router = harness.Router(router_template)
    door_router.env.update(ROUTER_FORWARD_BUDGET_SECONDS="3", ROUTER_FORWARD_CONNECT_TIMEOUT="1")
    door_router.start()
    assert door_router.api_key == router.api_key  # one caller for both: the router template's operator key
    db = f"mt_client_{uuid.uuid4().hex[:8]}"
    harness.pg_admin(f"CREATE DATABASE {db} TEMPLATE {region_template.name}")
    db_proxy = TcpProxy(harness.PG["host"], harness.PG["port"])
    region = harness.Region(region_template, region_id="eu-west-3",
                            database_url=f"postgres://{harness.PG['user']}@127.0.0.1:{db_proxy.port}/{db}")
    door = None
    try:
        router.add_region(region, labels="eu")
        region.env["ROUTER_PUBLIC_KEYS"] += f",{door_router.public_key}"
        region.start(api_key=router.api_key)
        region.agents = [region.agent("echo,fail,sleep", agent_id="client-agent", concurrency=4)]
        door = AnswerEater(("127.0.0.1", region.port))
        token = door_router.manage("router_add_region", "eu-west-3", door.url, "--labels", "door",
                                   "--summary-interval", "600")
        r = door_router.call("POST", "/update_regional_status", key=token, json={
            "region_id": "eu-west-3", "orchestrator_url": door.url, "available_agents": 0,
            "agent_capabilities_summary": {"echo": {"count": 1, "idle": 0}}, "last_updated": time.time(),
            "summary_interval": 600})
        assert r.status_code == 200, r.text
        wait_for(lambda: "echo" in router.regions()["eu-west-3"]["capabilities"], 60,
                 what="the region's first summary at the router")
        yield Fleet(router=router, region=region, db_proxy=db_proxy, door=door, door_router=door_router,
                    api_key=router.api_key)
    finally:
        for r in (region, router, door_router):
            r.stop()
        if door:
            door.close()
        db_proxy.close()
        harness.pg_admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


@pytest.fixture
def meridian(fleet):
    """The `meridian` CLI run as a process (at the router unless url= says otherwise)."""
    def run(*args: str, url: str | None = None, stdin: str | None = None, timeout: float = 120,
            **env: str) -> subprocess.CompletedProcess:
        environ = {**os.environ, "MERIDIAN_URL": url or fleet.router.url, "MERIDIAN_API_KEY": fleet.api_key, **env}
        return subprocess.run([sys.executable, "-m", "meridian_client.cli", *args], cwd=harness.ROOT, env=environ,
                              input=stdin, capture_output=True, text=True, timeout=timeout)
    return run
