#!/usr/bin/env python
"""Every benchmark, one after the other, quick versions by default (`make bench`):
each prints its table and its BENCH lines (bench/common.py); this prints them
all again at the end with the wall time of each benchmark and of the run.

    .venv/bin/python bench/all.py                        # --quick of each: under 5 minutes
    .venv/bin/python bench/all.py --only heartbeat,requeue
    .venv/bin/python bench/all.py --full                 # the default (full) versions: much longer
    make bench BENCH_ARGS="--only route"

One region template and one router template (tests.harness.Template: migrated,
collectstatic'd) are made here once and handed to the benchmarks that clone
from them through MERIDIAN_TEMPLATE_REGION / MERIDIAN_TEMPLATE_ROUTER, so the
run does not migrate a database per benchmark. Not handed to bench/summary.py
(it writes its agents into its template itself), nor used by bench/fleet.py and
bench/regional_vs_central.py (each makes its own migrate-only template).

The exit code is non-zero only when a benchmark crashed (non-zero exit or
timeout); a BENCH line ending in `short` is a result, not a failure.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness import ROOT, Template  # noqa: E402

# (name, the templates it clones from): in the order they run.
BENCHMARKS = [
    ("tasks", ("region",)),
    ("heartbeat", ("region",)),
    ("hotpath", ("region",)),
    ("route", ("router",)),
    ("fleet", ()),
    ("summary", ()),  # writes its agents into its template: it must have one of its own
    ("regional_vs_central", ()),
    ("requeue", ("region",)),
    ("config_sync", ("region",)),
    ("waiters", ("region",)),
    ("fairness", ("region",)),
]
QUICK_TIMEOUT = 240  # seconds; a quick benchmark that takes longer is stuck


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def make_templates(roles: set[str]) -> dict[str, Template]:
    """Both at once: migrate and collectstatic are mostly waiting on PostgreSQL and disk."""
    for role in roles:  # a template handed to this run must not be reused as its own
        os.environ.pop(f"MERIDIAN_TEMPLATE_{role.upper()}", None)
    made: dict[str, Template] = {}
    errors: list[BaseException] = []

    def make(role: str) -> None:
        try:
            made[role] = Template(role)
        except BaseException as exc:  # reported below, after the other one finished
            errors.append(exc)

    threads = [threading.Thread(target=make, args=(role,)) for role in sorted(roles)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for template in made.values():
            template.drop()
        raise errors[0]
    return made


def run_one(name: str, args: list[str], env: dict, timeout: float | None) -> tuple[int | None, float, list[str]]:
    """Run one benchmark, streaming its output; returns (exit code or None on timeout,
    seconds, its BENCH lines)."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / f"{name}.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True)
    lines: list[str] = []
    timer = None
    timed_out = threading.Event()

    def stop() -> None:
        # SIGINT first: the benchmark's finally blocks stop its processes and drop its databases.
        timed_out.set()
        try:
            os.kill(proc.pid, signal.SIGINT)
            proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    if timeout:
        timer = threading.Timer(timeout, stop)
        timer.start()
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.startswith("BENCH "):
                lines.append(line.rstrip("\n"))
        proc.wait()
    except KeyboardInterrupt:
        stop()
        raise
    finally:
        if timer:
            timer.cancel()
    return (None if timed_out.is_set() else proc.returncode), time.monotonic() - started, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated benchmark names: "
                        + ",".join(name for name, _ in BENCHMARKS))
    parser.add_argument("--full", action="store_true", help="the default (full) versions instead of --quick")
    parser.add_argument("--timeout", type=float, default=None,
                        help=f"seconds per benchmark before it is stopped ({QUICK_TIMEOUT} quick, none --full)")
    args = parser.parse_args()
    known = [name for name, _ in BENCHMARKS]
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    if unknown := [x for x in only if x not in known]:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(known)}")
    selected = [(name, roles) for name, roles in BENCHMARKS if not only or name in only]
    timeout = args.timeout if args.timeout is not None else (None if args.full else QUICK_TIMEOUT)

    t0 = time.monotonic()
    load_before = load()
    print(f"bench/all.py: {'full' if args.full else 'quick'} versions of {', '.join(n for n, _ in selected)}; "
          f"load average {load_before} ({os.cpu_count()} cores)", flush=True)
    present = [(name, roles) for name, roles in selected if (ROOT / "bench" / f"{name}.py").exists()]
    roles_needed = {role for _, roles in present for role in roles}
    templates = make_templates(roles_needed)
    setup = time.monotonic() - t0
    print(f"templates {', '.join(sorted(templates)) or '(none)'} ready in {setup:.1f} s", flush=True)

    results: list[tuple[str, str, float, list[str]]] = []  # name, status, seconds, BENCH lines
    crashed = False
    try:
        for name, roles in selected:
            if (name, roles) not in present:
                print(f"\n===== {name}: bench/{name}.py does not exist yet, skipped", flush=True)
                results.append((name, "skipped (no script)", 0.0, []))
                continue
            if not args.full and '"--quick"' not in (ROOT / "bench" / f"{name}.py").read_text():
                print(f"\n===== {name}: bench/{name}.py has no --quick yet, skipped (its full run is in --full)",
                      flush=True)
                results.append((name, "skipped (no --quick yet)", 0.0, []))
                continue
            env = {k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_TEMPLATE_")}
            env["PYTHONUNBUFFERED"] = "1"
            for role in roles:
                env[f"MERIDIAN_TEMPLATE_{role.upper()}"] = f"{templates[role].name}:{templates[role].static_root}"
            print(f"\n===== {name} ({'full' if args.full else '--quick'}), load average {load()}", flush=True)
            code, seconds, lines = run_one(name, [] if args.full else ["--quick"], env, timeout)
            if code is None:
                status, crashed = f"CRASHED (stopped after {timeout:g} s)", True
            elif code:
                status, crashed = f"CRASHED (exit {code})", True
            else:
                status = "ran" if lines else "ran, printed no BENCH line"
            print(f"===== {name}: {status}, {seconds:.1f} s", flush=True)
            results.append((name, status, seconds, lines))
    finally:
        for template in templates.values():
            template.drop()

    total = time.monotonic() - t0
    print(f"\n===== BENCH summary ({'full' if args.full else 'quick'})")
    for _, _, _, lines in results:
        for line in lines:
            print(line)
    print()
    print(f"{'benchmark':22} {'seconds':>8}  status")
    print(f"{'(templates)':22} {setup:8.1f}")
    for name, status, seconds, _ in results:
        print(f"{name:22} {seconds:8.1f}  {status}")
    print(f"{'total':22} {total:8.1f}  load average before {load_before}, after {load()}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
