"""Regions as real hosts: the router, each region's web, its orchestrator and its
agents in network namespaces of their own (tests/netns.py), joined by veth
links; PostgreSQL, Redis and RabbitMQ stay in the root namespace, reached
through one TcpProxy per process and service on the root side of a veth. Links
are cut for real (the hub's end of a veth set down, a blackhole route between
two hosts, a proxy that resets everything), then healed.

Every partition prints a FAULT line (tests/accounting.py) and asserts nothing
lost, nothing run twice, no process exited, and recovery within a bound. The
residency test captures the bytes crossing the router's and the other region's
links with AF_PACKET sockets and looks for marker strings in them.

    .venv/bin/python -m pytest tests/test_netns_partitions.py -p no:randomly -s
"""
from __future__ import annotations

import os
import sys
import threading
import time
import uuid

import pytest
import requests

from tests import harness, netns
from tests.accounting import Ledger, figures, record
from tests.harness import wait_for

pytestmark = pytest.mark.faults



@pytest.fixture(scope="module", autouse=True)
def _namespaces_available():
    """Every test of the module skipped, with the reason, where namespaces cannot
    be made (not root; `ip netns add` refused). Asked when a test of the module
    runs, not at collection: the fast tier creates no namespace."""
    why = netns.unavailable()
    if why:
        pytest.skip(f"network namespaces unavailable: {why}")

TERMINAL = ("succeeded", "failed", "cancelled")
CUT_SECONDS = float(os.environ.get("MERIDIAN_NETNS_CUT_SECONDS", "20"))
DB_CUT_SECONDS = float(os.environ.get("MERIDIAN_NETNS_DB_CUT_SECONDS", "15"))
RECOVERY_BOUND = 30.0  # seconds from the heal until the last task of the trickle has succeeded
# One task every TRICKLE_EVERY s: after a 20 s cut the one agent (2 slots, 0.3 s
# tasks) drains a backlog of ~40, which takes 6-12 s on a busy 2-core machine
# (one every 0.25 s made it 13-23 s, too near the bound).
TRICKLE_EVERY = 0.5


class NetRegion(harness.Region):
    """A region whose web, orchestrator and agents each run on a host of their
    own in `lab`. self.env keeps direct URLs (for manage.py and db_query from
    the test process); each process gets its own proxies in its environment."""

    def __init__(self, template, lab: netns.Lab, region_id: str, label: str, **env):
        super().__init__(template, region_id=region_id, **env)
        self.lab = lab
        self.hosts = {role: lab.host(f"{label}{role[0]}") for role in ("web", "orchestrator", "agents")}
        self.url = f"http://{self.hosts['web'].ip}:{self.port}"
        self.env.update(REGION_URL=self.url, ALLOWED_HOSTS=f"{self.hosts['web'].ip},127.0.0.1,localhost")
        self.links: dict[str, dict[str, harness.Proc]] = {}
        self.proxy_env = {role: self._proxies(role) for role in self.hosts}
        agent_broker = self.proxy_env["agents"]["CELERY_BROKER_URL"]
        for role in ("web", "orchestrator"):
            self.proxy_env[role]["AGENT_BROKER_URL"] = agent_broker
        self.proxy_env["agents"]["AGENT_BROKER_URL"] = agent_broker

    def _proxies(self, role: str) -> dict[str, str]:
        """One proxy per service for this process: each of its links can be cut alone."""
        lab, root = self.lab, self.lab.root_ip
        db, redis = lab.proxy(harness.PG["port"], harness.PG["host"]), lab.proxy(self.redis.port)
        broker = lab.proxy(harness.RabbitVhost.PORT, harness.RabbitVhost.HOST) if self.vhost else redis
        self.links[role] = {"db": db, "redis": redis, "broker": broker}
        return {"DATABASE_URL": f"postgres://{harness.PG['user']}@{root}:{db.port}/{self.db}",
                "REDIS_URL": f"redis://{root}:{redis.port}/0",
                "CELERY_BROKER_URL": self.vhost.url(broker.port).replace(self.vhost.HOST, root)
                if self.vhost else f"redis://{root}:{redis.port}/0"}

    def _spawn_on(self, role: str, name: str, args: list[str]) -> harness.Proc:
        return self._spawn(name, self.lab.exec_args(self.hosts[role], args), self.proxy_env[role])

    def start_web(self, workers: int = 2) -> harness.Proc:
        args = harness.web_command(self.port, workers)
        args[args.index("-b") + 1] = f"{self.hosts['web'].ip}:{self.port}"
        self.web = self._spawn_on("web", "web", args)
        wait_for(self._healthy, 40, what=f"{self.region_id} web server")
        return self.web

    def start_orchestrator(self) -> harness.Proc:
        self.orchestrator = self._spawn_on("orchestrator", "orchestrator", [
            sys.executable, "manage.py", "run_region_worker", "--beat", "--concurrency", "2"])
        return self.orchestrator

    def _spawn(self, name: str, args: list[str], env: dict | None = None) -> harness.Proc:
        if name.startswith("agent-"):  # harness.Region.agent's: on the agents' host, through its proxies
            return super()._spawn(name, self.lab.exec_args(self.hosts["agents"], args),
                                  {**(env or {}), **self.proxy_env["agents"]})
        return super()._spawn(name, args, env)


class NetRouter(harness.Router):
    def __init__(self, template, lab: netns.Lab):
        super().__init__(template)
        self.lab = lab
        self.host = lab.host("rt")
        self.url = f"http://{self.host.ip}:{self.port}"
        self.env["ALLOWED_HOSTS"] = f"{self.host.ip},127.0.0.1,localhost"
        self.db_proxy = lab.proxy(harness.PG["port"], harness.PG["host"])
        self.proxy_env = {"DATABASE_URL": f"postgres://{harness.PG['user']}@{lab.root_ip}:{self.db_proxy.port}/{self.db}"}

    def start_web(self, workers: int = 2) -> harness.Proc:
        args = harness.web_command(self.port, workers)
        args[args.index("-b") + 1] = f"{self.host.ip}:{self.port}"
        self.web = self._spawn("web", self.lab.exec_args(self.host, args), self.proxy_env)
        wait_for(self._healthy, 40, what="router web server")
        return self.web


@pytest.fixture(scope="module")
def fleet(request, _namespaces_available):
    # The templates asked for only now: on a machine that skips, none is migrated.
    region_template = request.getfixturevalue("region_template")
    router_template = request.getfixturevalue("router_template")
    with netns.Lab() as lab:
        router = eu = us = None
        try:
            router = NetRouter(router_template, lab)
            eu = NetRegion(region_template, lab, "eu-west-3", "eu")
            us = NetRegion(region_template, lab, "us-east-1", "us")
            router.start()
            router.add_region(eu, labels="eu,gdpr")
            router.add_region(us, labels="us")
            for region in (eu, us):
                region.start(api_key=router.api_key)
            eu.agents = [eu.agent("echo,sleep", agent_id="eu-agent-1", concurrency=2)]
            us.agents = [us.agent("echo,sleep", agent_id="us-agent-1", concurrency=2)]
            wait_for(lambda: len(router.regions()) == 2 and all(
                r["capabilities"] and not r["stale"] for r in router.regions().values()), 40,
                what="first summaries from both regions")
            yield lab, router, eu, us
        finally:
            for r in (us, eu, router):
                if r is not None:
                    r.stop()


# --- accounting ---------------------------------------------------------------------------
class Trickle:
    """One task every `every` seconds, submitted straight to the region from the
    test process (the root namespace), on a thread, until stop(); only what
    the region accepted (201) is counted."""

    def __init__(self, region: NetRegion, every: float = TRICKLE_EVERY, capability: str = "sleep"):
        self.region, self.every, self.capability = region, every, capability
        self.accepted: list[str] = []
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Trickle":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.every):
            n += 1
            try:
                r = self.region.call("POST", "/api/v1/tasks", json={
                    "capability": self.capability, "payload": {"seconds": 0.3, "n": n}, "max_attempts": 10})
            except requests.RequestException:
                self.refused += 1
                continue
            if r.status_code == 201:
                self.accepted.append(r.json()["id"])
            else:
                self.refused += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def _rows(region, ids):
    return region.db_query("SELECT id::text, status, attempt FROM regions_task WHERE id::text = ANY(%s)", (ids,))


def _account(region: NetRegion, scenario: str, ids: list[str], healed_at: float, bound: float = RECOVERY_BOUND,
             procs: list[harness.Proc] | None = None) -> dict:
    """Wait for every accepted task to be final; print the FAULT line; assert it."""
    def done():
        rows = _rows(region, ids)
        return len(rows) == len(ids) and all(r[1] in TERMINAL for r in rows) and rows

    try:
        rows = wait_for(done, bound + 30, interval=0.25, what=f"{len(ids)} tasks final")
    except AssertionError:
        stuck = [r for r in _rows(region, ids) if r[1] not in TERMINAL]
        raise AssertionError(f"{len(stuck)} tasks not final, e.g. {stuck[:5]}\n{region.logs()}") from None
    recovery = time.monotonic() - healed_at
    final = {r[0]: {"status": r[1], "attempt": r[2]} for r in rows}
    ledger = Ledger.from_logs([p.log for p in region.procs if p.name.startswith("agent-")])
    ledger.starts = {t: a for t, a in ledger.starts.items() if t in final}
    ledger.finishes = {t: a for t, a in ledger.finishes.items() if t in final}
    twice = ledger.completed_twice()
    stale = ledger.stale_starts({t: r["attempt"] for t, r in final.items()})
    succeeded = sum(1 for r in final.values() if r["status"] == "succeeded")
    exits = [p.name for p in (procs if procs is not None else region.procs) if not p.alive()]
    figures(scenario=scenario, submitted=len(ids), succeeded=succeeded, completed_twice=len(twice),
            stale=len(stale), recovery=recovery, crashes=len(exits))
    # Whether the cut put any task through a second attempt (requeued by the reaper,
    # or a message given back): the case where "completed twice" could happen at all.
    requeued = _requeued(region, final)
    record(f"NETNS {scenario}: {len(requeued)} tasks requeued (a second attempt made), "
           f"{sum(1 for a in ledger.starts.values() if len(a) > 1)} started more than once")
    assert ids, "the trickle had nothing accepted: the scenario proves nothing"
    assert succeeded == len(ids), {t: r for t, r in final.items() if r["status"] != "succeeded"}
    assert not twice, [(t, ledger.finishes[t]) for t in twice[:5]]
    assert not stale, [(t, ledger.starts[t], final[t]) for t in stale[:5]]
    assert not exits, (exits, region.logs())
    assert recovery < bound, f"recovery {recovery:.1f}s over {bound}s"
    return final


def _requeued(region: NetRegion, final: dict) -> set[str]:
    """The tasks the orchestrator gave a second attempt (the reaper's log line),
    whatever their final attempt (a late success of the first one stands)."""
    text = region.orchestrator.log.read_text(errors="replace") if region.orchestrator else ""
    return {t for t in final if f"task {t} requeued after attempt" in text}


def _partition(region: NetRegion, cut, heal, seconds: float, during=None, every: float = TRICKLE_EVERY,
               prime=None) -> tuple[list[str], float, int]:
    """A trickle before, during and just after a cut of `seconds`; returns the
    accepted ids, the moment of the heal, and how many were refused. `during`,
    called once the cut is in place, checks that the cut is felt (a no-op cut
    must fail the test, not pass it)."""
    with Trickle(region, every=every) as trickle:
        time.sleep(2)
        if prime:
            trickle.accepted.extend(prime())
        cut()
        cut_at = time.monotonic()
        try:
            if during:
                during()
            time.sleep(max(0.0, seconds - (time.monotonic() - cut_at)))
        finally:
            heal()
        healed = time.monotonic()
        time.sleep(2)  # the trickle goes on 2 s after the heal: recovery has a floor of about 2 s
    return trickle.accepted, healed, trickle.refused


def _log_count(proc: harness.Proc, text: str) -> int:
    return proc.log.read_text(errors="replace").count(text)


def _procs(region: NetRegion) -> list[harness.Proc]:
    return [region.web, region.orchestrator, *region.agents]


# --- partitions -------------------------------------------------------------------------------
def test_agents_host_cut_from_the_region_for_20s_loses_nothing_and_runs_nothing_twice(fleet):
    lab, router, eu, us = fleet
    host = eu.hosts["agents"]

    def prime() -> list[str]:
        """Two long tasks running on the agent when it is cut off: the reaper gives
        them a second attempt while the first runs on, unheard (the double-run window)."""
        ids = [eu.submit("sleep", {"seconds": 4}, max_attempts=10)["id"] for _ in range(2)]
        wait_for(lambda: all(eu.task(t)["status"] == "running" for t in ids), 15, what="both long tasks running")
        return ids

    def felt():  # the reaper sees the agent go silent and evicts it (its tasks requeued)
        wait_for(lambda: eu.agent_info("eu-agent-1")["status"] != "online", CUT_SECONDS - 2,
                 what="the cut-off agent evicted")

    ids, healed, refused = _partition(eu, lambda: lab.link_down(host), lambda: lab.link_up(host), CUT_SECONDS,
                                      during=felt, prime=prime)
    final = _account(eu, f"netns agents link down {CUT_SECONDS:g}s", ids, healed, procs=_procs(eu))
    assert _requeued(eu, final), "no task was given a second attempt: the double-run window never opened"
    wait_for(lambda: eu.agent_info("eu-agent-1")["status"] == "online", 20, what="the agent online again")


def test_region_cut_from_its_broker_for_20s_loses_nothing(fleet):
    lab, router, eu, us = fleet
    proxies = [eu.links[role]["broker"] for role in ("web", "orchestrator")]

    def cut():
        for p in proxies:
            p.cut()

    def heal():
        for p in proxies:
            p.restore()

    before = _log_count(eu.web, "broker unavailable")

    def felt():  # the web's sends fail and are left to the outbox sweeper
        wait_for(lambda: _log_count(eu.web, "broker unavailable") > before, 10, what="a dispatch deferred")

    ids, healed, refused = _partition(eu, cut, heal, CUT_SECONDS, during=felt)
    _account(eu, f"netns web+orchestrator broker link cut {CUT_SECONDS:g}s", ids, healed, procs=_procs(eu))


def test_orchestrator_cut_from_its_database_for_15s_loses_nothing(fleet):
    lab, router, eu, us = fleet
    proxy = eu.links["orchestrator"]["db"]
    before = _log_count(eu.orchestrator, "database unavailable")

    def felt():  # the clock jobs find the database gone
        wait_for(lambda: _log_count(eu.orchestrator, "database unavailable") > before, 10,
                 what="the orchestrator's clock jobs skipping")

    ids, healed, refused = _partition(eu, proxy.cut, proxy.restore, DB_CUT_SECONDS, during=felt)
    _account(eu, f"netns orchestrator database link cut {DB_CUT_SECONDS:g}s", ids, healed, procs=_procs(eu))


def test_a_standby_on_another_host_takes_the_clock_jobs_when_the_leader_is_cut_from_the_database(fleet):
    """A second orchestrator of eu on a host of its own. The leader's database
    link cut: it cannot renew, the standby takes the clock lease once it runs out
    (FAST timing: 2 s, renewed every 0.5 s) and runs the clock jobs; healed, the
    old leader finds its lease gone and stands by. Nothing accepted meanwhile is
    lost or run twice."""
    lab, router, eu, us = fleet

    def clock():
        return eu.call("GET", "/api/v1/region/status").json()["clock"]

    leader = wait_for(lambda: clock()["leader"], 15, what="eu's clock lease held")
    eu.hosts["standby"] = lab.host("eus")
    eu.proxy_env["standby"] = {**eu._proxies("standby"), "AGENT_BROKER_URL": eu.proxy_env["agents"]["AGENT_BROKER_URL"]}
    standby = eu._spawn_on("standby", "orchestrator-standby", [
        sys.executable, "manage.py", "run_region_worker", "--beat", "--concurrency", "2"])
    try:
        wait_for(lambda: len(clock()["standbys"]) == 1, 30, what="the standby heard")
        proxy = eu.links["orchestrator"]["db"]
        took = {}

        def felt():  # the standby leads, and the reaper ticks under it
            cut_at = time.monotonic()
            new = wait_for(lambda: (c := clock())["leader"] not in ("", leader) and c, 15, interval=0.1,
                           what="the standby taking the clock lease")
            took["s"] = time.monotonic() - cut_at
            took["token"] = new["token"]
            ticks = _log_count(standby, "Sending due task reap")
            wait_for(lambda: _log_count(standby, "Sending due task reap") > ticks, 10, what="a tick from the standby")

        ids, healed, refused = _partition(eu, proxy.cut, proxy.restore, DB_CUT_SECONDS, during=felt)
        _account(eu, f"netns leader cut from its database {DB_CUT_SECONDS:g}s, standby on another host",
                 ids, healed, procs=[*_procs(eu), standby])
        wait_for(lambda: "lost the clock lease" in eu.orchestrator.log.read_text(errors="replace"), 15,
                 what="the old leader standing by after the heal")
        assert clock()["token"] == took["token"] and clock()["leader"] != leader
        record(f"NETNS standby: leader cut from its database -> standby led after {took['s']:.1f}s "
               f"(lease 2 s, renewed every 0.5 s); healed, the old leader stands by")
        assert took["s"] < 2.0 + 0.5 + 2.0, took
    finally:
        standby.stop()  # a clean stop hands the lease back at once
    wait_for(lambda: clock()["leader"] and not clock()["standbys"], 20, what="eu led by its first orchestrator again")


def test_region_cut_from_the_router_keeps_working_and_its_summaries_resume(fleet):
    lab, router, eu, us = fleet
    rt = router.host
    cut_pairs = [(rt, eu.hosts["web"]), (rt, eu.hosts["orchestrator"])]
    before = router.regions()["eu-west-3"]["received_at"]
    answers: list[tuple[int, str | None, float]] = []     # through the router, anywhere
    eu_answers: list[tuple[int, str | None, float]] = []  # through the router, residency eu
    first_eu_detail = ""

    def cut():
        for a, b in cut_pairs:
            lab.block(a, b)

    def heal():
        for a, b in cut_pairs:
            lab.unblock(a, b)

    with Trickle(eu) as trickle:
        time.sleep(2)
        cut()
        try:
            deadline = time.monotonic() + CUT_SECONDS
            pinned = True  # the first one right after the cut, while eu's summary is still fresh
            while time.monotonic() < deadline:
                started = time.monotonic()
                body = {"capability": "echo", "payload": {"via": "router"}, **({"residency": "eu"} if pinned else {})}
                r = router.call("POST", "/api/v1/tasks", json=body)
                answer = r.json() if r.headers.get("Content-Type", "").startswith("application/json") else {}
                (eu_answers if pinned else answers).append(
                    (r.status_code, answer.get("region_id"), time.monotonic() - started))
                if pinned and len(eu_answers) == 1:
                    first_eu_detail = str(answer.get("detail") or answer)[:160]
                if r.status_code == 201:
                    us.wait_task(answer["task"]["id"], timeout=20)
                pinned = not pinned
                time.sleep(0.5)
            stale_seen = router.regions()["eu-west-3"]["stale"]
        finally:
            heal()
        healed = time.monotonic()
        time.sleep(2)
    wait_for(lambda: (r := router.regions()["eu-west-3"])["received_at"] > before and not r["stale"], 20,
             what="eu's summaries resume at the router")
    summaries_back = time.monotonic() - healed
    record(f"NETNS router<->eu cut {CUT_SECONDS:g}s: router answers {sorted({(s, g) for s, g, _ in answers}, key=str)} "
           f"slowest {max(d for _, _, d in answers):.1f}s; residency eu {sorted({s for s, _, _ in eu_answers})} "
           f"slowest {max(d for _, _, d in eu_answers):.1f}s (the first: {first_eu_detail!r}); eu stale at the router during the cut: {stale_seen}; "
           f"summaries back {summaries_back:.1f}s after the heal")
    # Through the router: landed in us, or refused with an answer (never eu, never a hang).
    assert answers and all(s == 201 and g == "us-east-1" or 400 <= s < 600 and s != 201 for s, g, _ in answers), answers
    assert all(d < 15 for _, _, d in answers), answers
    assert any(s == 201 and g == "us-east-1" for s, g, _ in answers)
    # Pinned to the region cut off: refused with an answer, quickly, never accepted.
    assert eu_answers and all(400 <= s < 600 and d < 15 for s, _, d in eu_answers), eu_answers
    assert stale_seen
    _account(eu, f"netns router<->eu link cut {CUT_SECONDS:g}s (eu's own tasks)", trickle.accepted, healed,
             procs=_procs(eu))


def test_web_split_from_its_orchestrator_for_20s_finishes_every_accepted_task_once(fleet):
    lab, router, eu, us = fleet
    host = eu.hosts["orchestrator"]
    before = _log_count(eu.orchestrator, "no reaper tick for")
    ids, healed, refused = _partition(eu, lambda: lab.link_down(host), lambda: lab.link_up(host), CUT_SECONDS)
    # Back on the wire, the reaper says it missed its ticks (and grants a grace, evicting nobody for it).
    wait_for(lambda: _log_count(eu.orchestrator, "no reaper tick for") > before, 15,
             what="the orchestrator noticing the gap")
    _account(eu, f"netns orchestrator host cut off (web split) {CUT_SECONDS:g}s", ids, healed, procs=_procs(eu))


# --- residency on the wire ---------------------------------------------------------------------
def test_task_data_crosses_no_link_outside_its_region(fleet):
    """Capture every byte on the router's link and on each of us's links while
    eu and us run tasks with markers in their payloads (echo returns its
    payload, so the result carries a marker of its own). Forward mode carries
    the payload through the router (the positive control: the capture works);
    route-then-submit carries nothing of the task through it; results never
    cross it; eu's task data never touches a us link."""
    from meridian_client import Client

    lab, router, eu, us = fleet
    watched = {"router": router.host.veth, **{f"us-{r}": h.veth for r, h in us.hosts.items()}}
    eu_links = {f"eu-{r}": h.veth for r, h in eu.hosts.items()}
    name_of = {v: k for k, v in {**watched, **eu_links}.items()}
    marks = {k: f"PAYLOAD-MARK-{k}-{uuid.uuid4().hex}" for k in ("eu-fwd", "eu-direct", "us-fwd", "us-direct")}
    results = {}
    with netns.Capture(lab.hub, [*watched.values(), *eu_links.values()]) as cap:
        with Client(router.url, router.api_key, timeout=10, deadline=30) as client:
            refs = {
                "eu-fwd": client.submit("echo", {"m": marks["eu-fwd"]}, residency="eu"),
                "us-fwd": client.submit("echo", {"m": marks["us-fwd"]}, residency="us"),
                "eu-direct": client.submit("echo", {"m": marks["eu-direct"]}, residency="eu", direct=True),
                "us-direct": client.submit("echo", {"m": marks["us-direct"]}, residency="us", direct=True),
            }
            for key, ref in refs.items():
                results[key] = ref.result(timeout=30)
        time.sleep(1)  # the last frames of the last exchange
    for key, ref in refs.items():
        assert ref.region_id == ("eu-west-3" if key.startswith("eu") else "us-east-1"), (key, ref.region_id)
        assert results[key]["echo"]["m"] == marks[key]  # the result carries the marker back
    seen = {key: {name_of[i] for i in cap.seen(m.encode())} for key, m in marks.items()}
    record(f"NETNS residency: {cap.frames} frames, {cap.total_bytes()} TCP payload bytes captured on "
           f"{len(watched) + len(eu_links)} links; marker seen on: "
           + "; ".join(f"{k}={sorted(v)}" for k, v in seen.items()))
    # Positive controls: the capture sees the payloads that must cross (forward
    # mode through the router) and each region's task data on its own links.
    assert cap.frames > 0 and cap.total_bytes() > 0, "the capture saw nothing"
    assert "router" in seen["eu-fwd"] and "router" in seen["us-fwd"], seen
    assert {"eu-web", "eu-agents"} <= seen["eu-direct"], seen
    assert {"us-web", "us-agents"} <= seen["us-direct"], seen
    # Route-then-submit: no payload through the router.
    assert "router" not in seen["eu-direct"] and "router" not in seen["us-direct"], seen
    # An eu task's data on no us link, in either mode.
    for key in ("eu-fwd", "eu-direct"):
        assert not {n for n in seen[key] if n.startswith("us-")}, (key, seen[key])
    for key in ("us-fwd", "us-direct"):
        assert not {n for n in seen[key] if n.startswith("eu-")}, (key, seen[key])
    # Results: the echo's answer wraps the marker in {"echo": {"m": ...}}; that
    # JSON fragment is the result, never in a forward's request.
    for key, m in marks.items():
        fragment = f'"echo": {{"m": "{m}"}}'.encode()
        compact = f'"echo":{{"m":"{m}"}}'.encode()
        where = {name_of[i] for i in cap.seen(fragment) | cap.seen(compact)}
        assert "router" not in where, (key, where, cap.where(fragment) + cap.where(compact))
        home = "eu-" if key.startswith("eu") else "us-"
        assert where and all(n.startswith(home) for n in where), (key, where)
