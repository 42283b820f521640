"""A small process supervisor for the demo: named children, each with a restart
policy, restarted with exponential backoff when they crash.

- ``Restart.ALWAYS`` (web servers, orchestrators, redis): any exit is
  unexpected and the process is started again.
- ``Restart.ON_FAILURE`` (agents): exit 0 means the process was told to stop
  (revoked, drained, deregistered) and it stays stopped; ``EX_CONFIG`` (78)
  means it was permanently refused and restarting it would only loop; anything
  else (non-zero, killed by a signal) is a crash and it is started again.

Backoff starts at ``backoff_min`` and doubles up to ``backoff_max``; it resets
once a process has stayed up ``reset_after`` seconds. A monitor thread polls the
children, so restarts happen whatever the main thread is doing. The state of
every child (pid, state, restarts, crashes, last exit) is written as JSON to
``status_file`` on every change, for scripts that drive the demo.
"""
from __future__ import annotations

import enum
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

EX_CONFIG = os.EX_CONFIG  # 78, sysexits.h: refused for good (configuration), do not restart


class Restart(str, enum.Enum):
    ALWAYS = "always"
    ON_FAILURE = "on-failure"


class State(str, enum.Enum):
    RUNNING = "running"
    BACKOFF = "backoff"  # crashed, waiting to be started again
    STOPPED = "stopped"  # exited 0 on request: stays stopped
    REFUSED = "refused"  # exited EX_CONFIG: stays stopped
    TERMINATED = "terminated"  # stopped by the supervisor itself


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class Child:
    name: str
    cmd: list[str]
    env: dict
    restart: Restart = Restart.ALWAYS
    tier: int = 0  # higher tiers are stopped first
    popen: subprocess.Popen | None = None
    state: State = State.RUNNING
    restarts: int = 0
    crashes: int = 0
    last_exit: int | None = None
    started_at: float = 0.0
    next_start: float = 0.0
    backoff: float = 0.0
    history: list[dict] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None


class Supervisor:
    def __init__(self, *, cwd: Path, log_dir: Path, status_file: Path | None = None,
                 say: Callable[[str], None] = print, backoff_min: float = 1.0, backoff_max: float = 30.0,
                 reset_after: float = 60.0, poll_interval: float = 0.2):
        self.cwd, self.log_dir, self.status_file, self.say = cwd, log_dir, status_file, say
        self.backoff_min, self.backoff_max, self.reset_after = backoff_min, backoff_max, reset_after
        self.poll_interval = poll_interval
        self.children: dict[str, Child] = {}
        self.extra: dict = {}  # published in the status file (phase, URLs, …)
        self.stopping = False
        self._lock = threading.RLock()
        self._stop_monitor = threading.Event()
        self._monitor: threading.Thread | None = None
        self._written_at = 0.0
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # --- children -------------------------------------------------------------
    def start(self, name: str, cmd: list[str], env: dict, *, restart: Restart = Restart.ALWAYS,
              tier: int = 0) -> Child:
        with self._lock:
            if self.stopping:
                raise RuntimeError("supervisor is stopping")
            child = Child(name=name, cmd=list(cmd), env=env, restart=restart, tier=tier,
                          backoff=self.backoff_min)
            self.children[name] = child
            self._spawn(child)
            self._write_status()
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._monitor_loop, name="supervisor", daemon=True)
            self._monitor.start()
        return child

    def _spawn(self, child: Child) -> None:
        # A session of its own: a Ctrl-C at the terminal reaches the demo only
        # (which stops children in order), and killpg reaches grandchildren
        # (gunicorn workers, Celery pool processes) left behind by a crash.
        with open(self.log_dir / f"{child.name}.log", "ab") as log:
            child.popen = subprocess.Popen(child.cmd, cwd=self.cwd, env=child.env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        child.state = State.RUNNING
        child.started_at = time.monotonic()

    def publish(self, **values) -> None:
        with self._lock:
            self.extra.update(values)
            self._write_status()

    # --- monitoring -------------------------------------------------------------
    def _monitor_loop(self) -> None:
        while not self._stop_monitor.wait(self.poll_interval):
            try:
                self.poll()
            except Exception as exc:  # the monitor must outlive any one bad poll
                self.say(f"supervisor: poll failed: {exc!r}")

    def poll(self) -> None:
        """Notice exits, decide what each means, start again what is due."""
        with self._lock:
            if self.stopping:
                return
            changed = False
            now = time.monotonic()
            for child in self.children.values():
                if child.state == State.RUNNING and child.popen.poll() is not None:
                    self._exited(child, now)
                    changed = True
                elif child.state == State.BACKOFF and now >= child.next_start:
                    self._spawn(child)
                    child.restarts += 1
                    self.say(f"supervisor: {child.name} restarted (restart #{child.restarts}, "
                             f"pid {child.pid})")
                    changed = True
            if changed or now - self._written_at >= 5:  # "updated" doubles as the demo's own liveness
                self._write_status()

    def _exited(self, child: Child, now: float) -> None:
        code = child.popen.returncode
        child.last_exit = code
        _killpg(child.popen.pid, signal.SIGKILL)  # whatever the leader left behind
        uptime = now - child.started_at
        child.history = [*child.history[-19:], {"exit": code, "uptime": round(uptime, 1), "at": time.time()}]
        if child.restart == Restart.ON_FAILURE and code == 0:
            child.state = State.STOPPED
            self.say(f"supervisor: {child.name} stopped on request (exit code 0); not restarted")
            return
        if child.restart == Restart.ON_FAILURE and code == EX_CONFIG:
            child.state = State.REFUSED
            self.say(f"supervisor: {child.name} was refused permanently (exit code {EX_CONFIG}); "
                     f"not restarted, see {self.log_dir / child.name}.log")
            return
        if uptime >= self.reset_after:
            child.backoff = self.backoff_min
        delay = child.backoff
        child.backoff = min(child.backoff * 2, self.backoff_max)
        child.crashes += 1
        child.state = State.BACKOFF
        child.next_start = now + delay
        self.say(f"supervisor: {child.name} exited unexpectedly ({describe_exit(code)}) after {uptime:.1f}s; "
                 f"restart #{child.restarts + 1} in {delay:g}s (log {self.log_dir / child.name}.log)")

    # --- status -----------------------------------------------------------------
    def status(self) -> dict:
        with self._lock:
            now = time.monotonic()
            return {
                **self.extra,
                "stopping": self.stopping,
                "updated": time.time(),
                "restarts": sum(c.restarts for c in self.children.values()),
                "crashes": sum(c.crashes for c in self.children.values()),
                "processes": {
                    c.name: {
                        "pid": c.pid, "state": c.state.value, "restart": c.restart.value,
                        "restarts": c.restarts, "crashes": c.crashes, "last_exit": c.last_exit,
                        "uptime": round(now - c.started_at, 1) if c.state == State.RUNNING else None,
                    } for c in self.children.values()
                },
            }

    def _write_status(self) -> None:
        if not self.status_file:
            return
        tmp = self.status_file.with_name(self.status_file.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.status(), fh, indent=1)
        os.replace(tmp, self.status_file)  # readers never see half a file
        self._written_at = time.monotonic()

    # --- stopping -----------------------------------------------------------------
    def stop_all(self, timeout: float = 20) -> int:
        """Highest tier first (agents: a warm shutdown finishes their work and
        deregisters while the regions still answer), then the rest in reverse
        start order. SIGTERM, then SIGKILL to the whole group after `timeout`."""
        with self._lock:
            self.stopping = True
            self._write_status()
        self._stop_monitor.set()
        if self._monitor is not None:
            self._monitor.join(5)
        children = list(self.children.values())
        for tier in sorted({c.tier for c in children}, reverse=True):
            group = [c for c in reversed(children) if c.tier == tier]
            for child in group:
                if child.popen.poll() is None:
                    try:
                        child.popen.send_signal(signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + timeout
            for child in group:
                try:
                    child.popen.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.say(f"supervisor: {child.name} did not stop within {timeout:g}s; killing it")
                    _killpg(child.popen.pid, signal.SIGKILL)
                    child.popen.wait(5)
                _killpg(child.popen.pid, signal.SIGKILL)  # grandchildren the leader left behind
                if child.state == State.RUNNING:
                    child.state = State.TERMINATED
                    child.last_exit = child.popen.returncode
        with self._lock:
            self._write_status()
        return len(children)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
