"""The demo's traffic: a mix of tasks submitted through the router, each
watched until it ends, one line per task."""
from __future__ import annotations

import time
from typing import Callable

import requests

from regions.management.demo.layout import DemoError

TEXT = ("Meridian runs a fleet of agents across regions. Each region keeps its own database, broker and "
        "clock; the router only tells agents and callers where to go. Tasks stay in their region, and so "
        "does their data. An agent that dies is noticed within seconds, and its work runs again elsewhere.")

PLAN = [
    # capability, residency (None: anywhere), payload
    ("data_ingestion", "eu", {"source": "readings.csv",
                              "schema": {"sensor": "str", "celsius": "float", "ok": "bool"}}),
    ("data_ingestion", "us", {"source": "readings.csv",
                              "schema": {"sensor": "str", "celsius": "float", "ok": "bool"}}),
    ("file_processing", None, {"source": "archive.log", "hash": ["sha256"], "compress": "gzip"}),
    ("echo", "apac", {"hello": "from the router"}),
    # The team's own handlers (examples/acme-tasks), next to the built-ins.
    ("text_stats", "eu", {"text": TEXT, "top": 3}),
    ("invoice_total", "us", {"currency": "EUR", "lines": [
        {"description": "sensor", "quantity": 12, "unit_price": "19.99", "tax_rate": "20"},
        {"description": "manual", "quantity": 1, "unit_price": "12.50", "tax_rate": "5.5"}]}),
]


def auth_headers(api_key: str) -> dict:
    return {"Authorization": f"Bearer {api_key}"}


def get_ok(url: str, **kw) -> requests.Response | None:
    """The response if it is a 200, else None (not answering yet counts as None)."""
    try:
        response = requests.get(url, timeout=3, **kw)
    except requests.RequestException:
        return None
    return response if response.status_code == 200 else None


def tasks_submit_and_watch(*, router_url: str, api_key: str, count: int, say: Callable[[str], None]) -> None:
    """Submit `count` tasks from PLAN through the router and print each as it
    ends; DemoError unless every one succeeded within 90 s."""
    headers = auth_headers(api_key)
    say(f"\nsubmitting {count} tasks through the router ({router_url}/api/v1/tasks):")
    submitted = []
    for i in range(count):
        capability, residency, payload = PLAN[i % len(PLAN)]
        body = {"capability": capability, "payload": payload, "idempotency_key": f"demo-{i}"}
        if residency:
            body["residency"] = residency
        started = time.monotonic()
        response = requests.post(f"{router_url}/api/v1/tasks", json=body, headers=headers, timeout=15)
        if response.status_code not in (200, 201):
            say(f"  ! {capability}: {response.status_code} {response.text[:200]}")
            continue
        data = response.json()
        submitted.append((data["region_id"], data["task"]["url"], capability, residency, started))
    say(f"  {'region':15} {'capability':16} {'residency':9} {'status':10} {'attempt':7} {'agent':12} "
        f"{'seconds':>7}  result")
    done = 0
    deadline = time.monotonic() + 90
    pending = list(submitted)
    while pending and time.monotonic() < deadline:
        for item in list(pending):
            region_id, url, capability, residency, started = item
            response = get_ok(url, headers=headers)
            if response is None:
                continue
            task = response.json()
            if task["status"] in ("succeeded", "failed", "cancelled"):
                pending.remove(item)
                done += task["status"] == "succeeded"
                say(f"  {region_id:15} {capability:16} {residency or '-':9} {task['status']:10} "
                    f"{task['attempt']:<7} {task['agent']:12} {time.monotonic() - started:7.2f}  "
                    f"{_brief(task)}")
        time.sleep(0.2)
    say(f"\n{done} of {len(submitted)} tasks completed"
        f"{'' if not pending else f'; {len(pending)} still running'}")
    if done != len(submitted):
        raise DemoError("not every task completed; see the logs")


def _brief(task: dict) -> str:
    result = task.get("result") or {}
    if "records_valid" in result:
        return f"{result['records_valid']} records stored, {result['records_invalid']} rejected, {result['checksum'][:19]}…"
    if "unique_words" in result:
        return f"{result['words']} words, {result['sentences']} sentences, top {result['top']}"
    if "total" in result and "currency" in result:
        return f"{result['lines']} lines: net {result['net']} + tax {result['tax']} = {result['total']} {result['currency']}"
    if "size_bytes" in result:
        return f"{result['size_bytes']} bytes → gzip {result['compressed_bytes']} (sha256 {result['digests']['sha256'][:12]}…)"
    return str(result)[:60] if result else task.get("error", "")[:60]


WORKFLOW = [
    {"capability": "text_stats", "payload": {"text": TEXT, "top": 3}},
    {"group": [{"capability": "echo", "payload": {"part": part}} for part in range(3)]},
    {"capability": "echo", "payload": {"joined": True}},
]


def workflow_submit_and_watch(*, region_id: str, region_url: str, api_key: str,
                              say: Callable[[str], None]) -> None:
    """One workflow at a region (text_stats, then a 3-way fan-out of echo, then
    a join), watched until it ends; DemoError unless it succeeded within 60 s."""
    headers = auth_headers(api_key)
    say(f"\na workflow at {region_id} ({region_url}/api/v1/workflows): text_stats → 3 × echo → echo (join)")
    started = time.monotonic()
    response = requests.post(f"{region_url}/api/v1/workflows", json={"steps": WORKFLOW,
                                                                     "idempotency_key": "demo-workflow"},
                             headers=headers, timeout=15)
    if response.status_code not in (200, 201):
        raise DemoError(f"the workflow was refused: {response.status_code} {response.text[:300]}")
    url = response.json()["url"]
    workflow = response.json()
    while time.monotonic() < started + 60 and workflow["status"] == "running":
        time.sleep(0.2)
        workflow = (get_ok(url, headers=headers) or response).json()
    steps = " → ".join("+".join(t["status"] for t in step["tasks"]) for step in workflow["steps"])
    say(f"  workflow {workflow['id']} {workflow['status']} in {time.monotonic() - started:.2f} s: {steps}")
    if workflow["status"] != "succeeded":
        raise DemoError(f"the workflow did not succeed: {workflow.get('error') or workflow['status']}")
    results = (workflow.get("result") or {}).get("echo", {}).get("results", [])
    say(f"  the join received {len(results)} results, one per member of the group")
