#!/usr/bin/env python
"""Fair shares per tenant: one caller's latency while another floods the same
capability, side by side in one run, same region (gunicorn with the project's
uvicorn workers, the orchestrator, real echo agents):

  A  a tenant (its own user and API key) that floods --flood echo tasks through
     POST /api/v1/tasks/batch, 100 per request from 4 threads, as fast as the
     region takes them. A 429 (a submission quota) is honoured: it waits
     Retry-After and sends the refused items again (same idempotency keys)
     until all --flood are accepted; a batch whose answer is lost (the
     connection dropped) is sent again too, up to 3 times.
  B  another tenant (its own user and key) that submits one echo task at a
     time and long-polls GET /api/v1/tasks/<id>?wait=30 until it is final;
     its latency is from before the POST to the final answer arriving.

Rounds interleave the sides (idle, flood, flood, idle, ...). An idle round is
--samples of B's tasks on an otherwise quiet region. A flood round starts a
fresh flood of A's; once A's backlog (its tasks accepted and not final) is at
least half the flood (or A was answered 429: a quota caps the backlog, and
what it allows is the load; or A's submission is over), B samples one after
the other while the backlog is still at least half the flood (at most
--samples; at least one); then the flood is left to drain before the next
round. For every sample of B's, A's backlog when it was submitted and when it
finished is recorded: the table shows the measurement was taken under load.

    .venv/bin/python bench/fairness.py              # 8 rounds, 30 samples a round: about 3 min
    .venv/bin/python bench/fairness.py --quick      # 4 rounds, 10 samples a round: 1-1.5 min (make bench)
    .venv/bin/python bench/fairness.py --quick --profile  # py-spy during the first flood round

Ends with two BENCH lines (bench/common.py): B's submit -> succeeded p50 and p95
during A's flood against the same figure idle (target: at most 2x). Without
fair dispatch B's task queues behind A's whole backlog, so the ratio is the
backlog's drain time over one task's latency; a `short` line is a result, not
a failure (exit 0), as in every benchmark.

Needs PostgreSQL and redis-server.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import bench_line, percentile  # noqa: E402
from bench.tasks import PRODUCTION_CLOCKS, Db, profile_start, profile_stop, profile_summary, wait_progress  # noqa: E402
from tests.harness import Region, Template  # noqa: E402

FINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("waiting", "queued", "running", "retrying")  # regions.models.Task.ACTIVE
# 100 per request from 4 threads, as bench/tasks.py's batch submission: 500 (the
# API's largest, project.validation.BATCH_MAX_ITEMS) from 2 threads took 20 s and
# more per request on a loaded machine, and one ran into the web's 30 s worker timeout.
BATCH = 100
FLOOD_THREADS = 4
RESENDS = 3  # a batch whose answer was lost is sent again: its idempotency keys make that safe
UNDER_LOAD = 0.5  # a flood round samples while at least this share of A's flood is unfinished


def retry_after(response: httpx.Response, default: float = 1.0) -> float:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default


class Flood(threading.Thread):
    """Tenant A: `size` echo tasks in batches of BATCH from FLOOD_THREADS threads,
    each batch sent again (its refused items only) after Retry-After on a 429."""

    def __init__(self, url: str, key: str, size: int, tag: str):
        super().__init__(daemon=True)
        self.url, self.key, self.size, self.tag = url, key, size, tag
        self.accepted = 0
        self.throttled = 0  # 429s honoured (whole requests or items)
        self.resent = 0  # batches sent again after a lost answer
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.started = self.finished = 0.0

    def run(self) -> None:
        self.started = time.monotonic()
        items = [{"capability": "echo", "payload": {"flood": self.tag, "i": i},
                  "idempotency_key": f"fairness-{self.tag}-{i}"} for i in range(self.size)]
        batches = [items[i:i + BATCH] for i in range(0, self.size, BATCH)]
        try:
            with httpx.Client(headers={"Authorization": f"Bearer {self.key}"}, timeout=120) as client, \
                    ThreadPoolExecutor(FLOOD_THREADS) as pool:
                list(pool.map(lambda batch: self._send(client, batch), batches))
        except Exception as exc:
            self.errors.append(repr(exc)[:500])
        finally:
            self.finished = time.monotonic()

    def _send(self, client: httpx.Client, batch: list[dict]) -> None:
        lost = 0
        while batch:
            try:
                r = client.post(f"{self.url}/api/v1/tasks/batch", json={"tasks": batch})
            except httpx.TransportError:
                lost += 1
                if lost > RESENDS:
                    raise
                self.resent += 1
                continue
            if r.status_code == 429:
                self.throttled += 1
                time.sleep(retry_after(r))
                continue
            if r.status_code != 200:
                raise AssertionError(f"flood batch: {r.status_code} {r.text[:500]}")
            body = r.json()
            again, wait = [], 0.0
            for answer in body["results"]:
                if answer["status"] in (200, 201):
                    continue
                if answer["status"] != 429:
                    raise AssertionError(f"flood item refused: {answer}")
                again.append(batch[answer["index"]])
                wait = max(wait, float(answer.get("retry_after") or 1.0))
            with self.lock:
                self.accepted += len(batch) - len(again)
            if again:
                self.throttled += len(again)
                time.sleep(wait)
            batch = again


STAGES = ("accepted", "sent", "queued", "ran", "answered")


def stages(task: dict, *, submitted: float, answered: float) -> tuple[float, ...]:
    """Where B's latency went, in ms (one machine, one clock): the POST until the
    row was stored (created_at), stored until its message was sent
    (dispatched_at: held back by fair dispatch, or not), sent until claimed
    (started_at: the queue, and the claim's request), claimed until its result
    was stored (finished_at: the run and the report), stored until the answer
    arrived (the long-poll's wake)."""
    from datetime import datetime

    created, sent, started, finished = (datetime.fromisoformat(task[k].replace("Z", "+00:00")).timestamp()
                                        for k in ("created_at", "dispatched_at", "started_at", "finished_at"))
    return tuple(round(max(0.0, b - a) * 1000, 1) for a, b in
                 ((submitted, created), (created, sent), (sent, started), (started, finished), (finished, answered)))


class Caller:
    """Tenant B: one echo task at a time, submit then long-poll until final."""

    def __init__(self, url: str, key: str):
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=90)
        self.n = 0

    def sample(self) -> tuple[float, dict]:
        """Milliseconds from before the submit to the final answer, and the task."""
        self.n += 1
        sent, wall = time.monotonic(), time.time()
        while True:
            r = self.client.post("/api/v1/tasks", json={"capability": "echo", "payload": {"b": self.n}})
            if r.status_code != 429:
                break
            time.sleep(retry_after(r))
        assert r.status_code == 201, f"B's submit: {r.status_code} {r.text[:300]}"
        task = r.json()
        while task["status"] not in FINAL:
            r = self.client.get(f"/api/v1/tasks/{task['id']}", params={"wait": 30})
            assert r.status_code == 200, f"B's wait: {r.status_code} {r.text[:300]}"
            task = r.json()
        ms = (time.monotonic() - sent) * 1000
        assert task["status"] == "succeeded", f"B's task: {task}"
        task["_stages"] = stages(task, submitted=wall, answered=time.time())
        return ms, task

    def close(self) -> None:
        self.client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood", type=int, default=2000, help="tasks in each of A's floods")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved, a multiple of 4 (8; --quick 4)")
    parser.add_argument("--samples", type=int, default=None,
                        help="B's tasks per idle round, and at most per flood round (30; --quick 10)")
    parser.add_argument("--agents", type=int, default=3, help="echo agents")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork processes per agent")
    parser.add_argument("--workers", type=int, default=2, help="web workers")
    parser.add_argument("--quick", action="store_true", help="4 rounds, 10 samples a round: under 2 minutes")
    parser.add_argument("--full", action="store_true", help="the full version (the default; for symmetry)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy on the web, orchestrator and agents during the first flood round")
    args = parser.parse_args()
    if args.quick and args.full:
        parser.error("--quick or --full, not both")
    args.rounds = args.rounds or (4 if args.quick else 8)
    args.samples = args.samples or (10 if args.quick else 30)
    sides = ["idle", "flood", "flood", "idle"] * (args.rounds // 4) or ["idle", "flood"]
    load0 = os.getloadavg()

    template = Template()
    region = Region(template, region_id="bench-fairness", broker="redis", DEBUG="0", LOG_LEVEL="WARNING",
                    **PRODUCTION_CLOCKS)
    db = caller = None
    floods: list[Flood] = []
    try:
        region.start_web(args.workers)
        region.start_orchestrator()
        key_a = region.manage("create_api_key", "tenant-a")
        key_b = region.manage("create_api_key", "tenant-b")
        agents = [region.agent("echo", agent_id=f"bench-fair-{i}", concurrency=args.concurrency)
                  for i in range(args.agents)]
        profilers = profiles = None
        db = Db(region.database_url)
        user_a = db.value("SELECT id FROM auth_user WHERE username = 'tenant-a'")
        count_a = "SELECT count(*) FROM regions_task WHERE submitted_by_id = %s AND status IN %s"

        def backlog() -> int:
            """A's tasks accepted and not final (each flood drains before the next begins)."""
            return db.value(count_a, (user_a, ACTIVE))
        caller = Caller(region.url, key_b)
        for _ in range(5):  # warm-up: every agent and web worker has served the path
            caller.sample()

        # (round, side, ms, A's backlog at B's submit, at B's finish, A's accepted at B's submit, stages)
        samples: list[tuple[int, str, float, int, int, int, tuple]] = []
        rows = []
        for number, side in enumerate(sides, 1):
            started = time.monotonic()
            if side == "idle":
                for _ in range(args.samples):
                    ms, task = caller.sample()
                    samples.append((number, side, ms, 0, 0, 0, task["_stages"]))
                rows.append({"round": number, "side": side, "seconds": time.monotonic() - started,
                             "samples": args.samples, "drain": 0.0, "throttled": 0, "resent": 0})
                print(f"round {number} (idle): {args.samples} samples", flush=True)
                continue
            before = db.value(count_a, (user_a, FINAL))
            if args.profile and profiles is None:
                profilers = profile_start(region, agents)
            flood = Flood(region.url, key_a, args.flood, tag=str(number))
            floods.append(flood)
            flood.start()
            # B begins once A's backlog is at least half the flood, or A was told to slow
            # down (a quota caps the backlog: what it allows is the load), or A's
            # submission is over (the region took the flood slower than it ran it).
            need = UNDER_LOAD * args.flood
            while backlog() < need and not flood.throttled and flood.is_alive():
                time.sleep(0.01)
            assert not flood.errors, flood.errors
            taken = 0
            while taken < args.samples:
                at_submit, accepted = backlog(), flood.accepted
                if taken and at_submit < need and not (flood.throttled and flood.is_alive()):
                    break
                ms, task = caller.sample()
                samples.append((number, side, ms, at_submit, backlog(), accepted, task["_stages"]))
                taken += 1
            flood.join(600)
            assert not flood.errors and flood.accepted == args.flood, (flood.errors, flood.accepted)
            drain_from = time.monotonic()
            wait_progress(lambda: db.value(count_a, (user_a, FINAL)) - before, args.flood,
                          f"A's flood of round {number} finished", logs=region.logs)
            if profilers and profiles is None:
                profiles = profile_stop(profilers)
            rows.append({"round": number, "side": side, "seconds": time.monotonic() - started, "samples": taken,
                         "drain": time.monotonic() - drain_from, "throttled": flood.throttled,
                         "resent": flood.resent,
                         "submit": flood.finished - flood.started})
            print(f"round {number} (flood): {taken} samples, A's flood accepted in "
                  f"{flood.finished - flood.started:.1f} s, drained {time.monotonic() - started:.1f} s after it began",
                  flush=True)
        failed = db.rows("SELECT status, count(*) FROM regions_task WHERE status <> 'succeeded' GROUP BY status")
        assert not failed, f"tasks not succeeded: {failed}\n{region.logs()}"

        load1 = os.getloadavg()
        print(f"\nfairness benchmark: load average {' '.join(f'{x:.2f}' for x in load0)} at start, "
              f"{' '.join(f'{x:.2f}' for x in load1)} at end; {args.agents} echo agents x concurrency "
              f"{args.concurrency}, gunicorn -w {args.workers} (uvicorn workers), redis broker; A floods "
              f"{args.flood} echo tasks per flood round ({BATCH} per batch, {FLOOD_THREADS} threads); "
              f"B one task at a time (submit, then ?wait=30 until final); one 2-core machine")
        print(f"{'round':>5} {'side':6} {'samples':>7} {'B p50':>9} {'B p95':>9} {'B max':>9} "
              f"{'A backlog at B submit / finish (median)':>40} {'A 429s':>7} {'resent':>7} {'round s':>8}")
        for r in rows:
            mine = [s for s in samples if s[0] == r["round"]]
            ms = [s[2] for s in mine]
            at = f"{percentile([s[3] for s in mine], 50):.0f} / {percentile([s[4] for s in mine], 50):.0f}" \
                if r["side"] == "flood" else "-"
            print(f"{r['round']:5d} {r['side']:6} {len(mine):7d} {percentile(ms, 50):7.1f}ms "
                  f"{percentile(ms, 95):7.1f}ms {max(ms):7.1f}ms {at:>40} {r['throttled']:7d} {r['resent']:7d} "
                  f"{r['seconds']:8.1f}")
        print(f"\nB's flood samples, each: latency (A's backlog, accepted and not final, at B's submit -> at B's "
              f"finish) [A's flood accepted of {args.flood} at B's submit] {'/'.join(STAGES)} ms")
        for number in sorted({s[0] for s in samples if s[1] == "flood"}):
            print(f"  round {number}: " + ", ".join(f"{s[2]:.0f} ms ({s[3]}->{s[4]}) [{s[5]}] "
                                                     f"{'/'.join(f'{x:.0f}' for x in s[6])}"
                                                     for s in samples if s[0] == number))
        idle = [s[2] for s in samples if s[1] == "idle"]
        flood_ms = [s[2] for s in samples if s[1] == "flood"]
        summary = {side: (percentile(v, 50), percentile(v, 95), len(v)) for side, v in
                   (("idle", idle), ("flood", flood_ms))}
        print(f"\n{'side':6} {'B p50':>9} {'B p95':>9} {'samples':>8}")
        for side, (p50, p95, n) in summary.items():
            print(f"{side:6} {p50:7.1f}ms {p95:7.1f}ms {n:8d}")
        print("\nwhere B's time went, p50 ms per stage: " + ", ".join(
            f"{side}: " + " ".join(f"{name} {percentile([x[6][i] for x in samples if x[1] == side], 50):.0f}"
                                   for i, name in enumerate(STAGES))
            for side in ("idle", "flood")))
        (idle50, idle95, _), (flood50, flood95, _) = summary["idle"], summary["flood"]
        print(f"fairness: idle_p50_ms={idle50:.1f} flood_p50_ms={flood50:.1f} ratio={flood50 / idle50:.2f} "
              f"idle_p95_ms={idle95:.1f} flood_p95_ms={flood95:.1f} ratio_p95={flood95 / idle95:.2f} target=2.0\n")
        if profiles:
            profile_summary(profiles)
        bench_line("fairness_flood_p50", flood50, "ms", ref=idle50, target="<=2.0x", ok=flood50 <= 2.0 * idle50)
        bench_line("fairness_flood_p95", flood95, "ms", ref=idle95, target="<=2.0x", ok=flood95 <= 2.0 * idle95)
    finally:
        for flood in floods:
            flood.join(5)
        if caller is not None:
            caller.close()
        if db is not None:
            db.close()
        region.stop()
        template.drop()


if __name__ == "__main__":
    main()
