#!/usr/bin/env python
"""Soak: the demo under steady traffic for a while, then the bill.

    .venv/bin/python bench/soak.py [--seconds 600] [--rate 4] [--base-port 8100] [--dir var/soak]
    .venv/bin/python bench/soak.py --attach var/demo-status.json --seconds 60

Starts `manage.py demo` (or, with --attach, uses a running one through its
--status-file), submits tasks at a steady rate through the router's
POST /api/v1/tasks (mostly echo, some CSV ingestion and file hashing, with and
without residency), follows every accepted task to its end, then checks the
supervisor's status file: no process crashed or was restarted and every one is
still running. A demo it started is stopped with SIGINT and must exit 0.

Prints `BENCH soak <completed> tasks ref=<submitted> ratio=<completed/submitted>
target=1.0 <ok|short> restarts=<n> crashes=<n>`; exits 1 when short.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = ("succeeded", "failed", "cancelled")
INGEST = {"source": "readings.csv", "schema": {"sensor": "str", "celsius": "float", "ok": "bool"}}
PLAN = (
    [("echo", None, {"n": 0})] * 5
    + [("echo", "eu", {"n": 0}), ("echo", "apac", {"n": 0}), ("echo", "us", {"n": 0})]
    + [("file_processing", None, {"source": "archive.log", "hash": ["sha256"], "compress": "gzip"}),
       ("data_ingestion", "eu", INGEST)]
)


def read_status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"soak: timed out after {timeout:g}s waiting for {what}")


class Soak:
    def __init__(self, router_url: str, api_key: str, rate: float):
        self.router_url, self.rate = router_url, rate
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.run = uuid.uuid4().hex[:8]
        self.submitted = 0
        self.refused: list[str] = []
        self.pending: dict[str, float] = {}  # task url -> submitted at
        self.outcomes: dict[str, int] = {}
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        self.traffic_done = threading.Event()

    def submit_for(self, seconds: float) -> None:
        session = requests.Session()
        start = time.monotonic()
        for i in itertools.count():
            due = start + i / self.rate  # a steady rate, not "as fast as it answers"
            if due - start >= seconds:
                break
            time.sleep(max(0.0, due - time.monotonic()))
            capability, residency, payload = PLAN[i % len(PLAN)]
            body = {"capability": capability, "payload": {**payload, "n": i} if capability == "echo" else payload,
                    "idempotency_key": f"soak-{self.run}-{i}"}
            if residency:
                body["residency"] = residency
            self.submitted += 1
            try:
                response = session.post(f"{self.router_url}/api/v1/tasks", json=body, headers=self.headers,
                                        timeout=15)
            except requests.RequestException as exc:
                self.refused.append(f"{capability}: {exc}")
                continue
            if response.status_code not in (200, 201):
                self.refused.append(f"{capability}: {response.status_code} {response.text[:200]}")
                continue
            with self.lock:
                self.pending[response.json()["task"]["url"]] = time.monotonic()
        self.traffic_done.set()

    def follow(self, drain: float) -> None:
        """Poll pending tasks (oldest first) until none is left, or `drain`
        seconds after the traffic stopped."""
        session = requests.Session()
        drain_deadline = None
        while True:
            if self.traffic_done.is_set() and drain_deadline is None:
                drain_deadline = time.monotonic() + drain
            with self.lock:
                batch = sorted(self.pending.items(), key=lambda kv: kv[1])[:40]
            if not batch:
                if self.traffic_done.is_set():
                    return
                time.sleep(0.2)
                continue
            if drain_deadline is not None and time.monotonic() > drain_deadline:
                return
            for url, submitted_at in batch:
                if time.monotonic() - submitted_at < 0.3:
                    continue
                try:
                    response = session.get(url, headers=self.headers, timeout=10)
                except requests.RequestException:
                    continue
                if response.status_code != 200:
                    continue
                task = response.json()
                if task["status"] in TERMINAL:
                    with self.lock:
                        self.pending.pop(url, None)
                        self.outcomes[task["status"]] = self.outcomes.get(task["status"], 0) + 1
                        if task["status"] == "succeeded":
                            self.latencies.append(time.monotonic() - submitted_at)
                        else:
                            self.failures.append(f"{task['capability']} {task['status']}: {task.get('error', '')[:200]}")
            time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600, help="traffic duration (default 10 minutes)")
    parser.add_argument("--rate", type=float, default=4, help="tasks submitted per second")
    parser.add_argument("--drain", type=float, default=90, help="seconds to wait for the last tasks")
    parser.add_argument("--base-port", type=int, default=8100)
    parser.add_argument("--dir", default=str(ROOT / "var" / "soak"))
    parser.add_argument("--vhost-prefix", default="meridian-soak")
    parser.add_argument("--attach", default=None, help="status file of a running demo (do not start one)")
    args = parser.parse_args()

    demo = None
    if args.attach:
        status_file = Path(args.attach)
    else:
        root = Path(args.dir)
        root.mkdir(parents=True, exist_ok=True)
        status_file = root / "status.json"
        status_file.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "EXTRA_APPS", "REDIS_URL", "CELERY_BROKER_URL", "REGION_ID")}
        env["DJANGO_SETTINGS_MODULE"] = "project.settings"
        demo = subprocess.Popen(
            [sys.executable, "manage.py", "demo", "--tasks", "4", "--base-port", str(args.base_port),
             "--dir", str(root / "demo"), "--status-file", str(status_file), "--vhost-prefix", args.vhost_prefix],
            cwd=ROOT, env=env, stdout=open(root / "demo.out", "wb"), stderr=subprocess.STDOUT)
        print(f"soak: demo starting (output in {root / 'demo.out'})", flush=True)
    try:
        def running():
            if demo is not None and demo.poll() is not None:
                raise SystemExit(f"soak: the demo exited with {demo.returncode} before it was running")
            return read_status(status_file).get("phase") == "running"

        wait_until(running, 300, "the demo to be running")
        before = read_status(status_file)
        soak = Soak(before["router_url"], before["api_key"], args.rate)
        print(f"soak: {args.seconds:g}s of traffic at {args.rate:g} tasks/s through {before['router_url']}",
              flush=True)
        submitter = threading.Thread(target=soak.submit_for, args=(args.seconds,), daemon=True)
        submitter.start()
        soak.follow(args.drain)
        submitter.join()
        after = read_status(status_file)
    finally:
        if demo is not None and demo.poll() is None:
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(120)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()

    restarts = after["restarts"] - before["restarts"]
    crashes = after["crashes"] - before["crashes"]
    not_running = {name: p["state"] for name, p in after["processes"].items() if p["state"] != "running"}
    completed = soak.outcomes.get("succeeded", 0)
    ratio = completed / soak.submitted if soak.submitted else 0.0
    demo_exit = demo.returncode if demo is not None else 0
    ok = (soak.submitted > 0 and completed == soak.submitted and restarts == 0 and crashes == 0
          and not not_running and demo_exit == 0)
    lat = sorted(soak.latencies)
    if lat:
        print(f"soak: submit->succeeded p50 {lat[len(lat) // 2]:.2f}s p99 {lat[int(len(lat) * 0.99)]:.2f}s")
    print(f"soak: accepted {soak.submitted - len(soak.refused)}, refused {len(soak.refused)}, "
          f"outcomes {soak.outcomes}, still pending {len(soak.pending)}, processes not running {not_running or 'none'}, "
          f"demo exit {demo_exit}")
    for line in (soak.refused + soak.failures)[:10]:
        print(f"soak:   {line}")
    for name, proc in after["processes"].items():
        if proc["restarts"] or proc["crashes"]:
            print(f"soak:   {name} restarts={proc['restarts']} crashes={proc['crashes']} last_exit={proc['last_exit']}")
    print(f"BENCH soak {completed} tasks ref={soak.submitted} ratio={ratio:.3f} target=1.0 "
          f"{'ok' if ok else 'short'} restarts={restarts} crashes={crashes}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
