"""Starting and stopping the fleet: each role's database set up side by side,
every process under the supervisor, and on SIGINT or SIGTERM agents stopped
first and the rest after.

Storage: SQLite per role. Broker: a RabbitMQ vhost per region on the local
RabbitMQ (``meridian-demo-<region>``, deleted and re-created at start so a
previous run's messages are gone, as guest); if RabbitMQ is not installed or
does not answer, a Redis database per region on the liveness Redis, with a
warning (Redis emulates acknowledgements: the weaker broker). Liveness needs
Redis: the local one (127.0.0.1:6379, a database number per region) or, if none
answers, a redis-server started for the demo.

Every process runs under a supervisor (``regions/management/supervisor.py``): a
crash is restarted with backoff; an agent that exits 0 (revoked, drained) or 78
(refused for good) stays stopped. ``status_file`` gets each process's state as
JSON, for scripts such as ``bench/soak.py``.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from django.conf import settings

from project.accounts.assertions import keypair_generate
from project.accounts.tokens import token_generate
from regions.management.demo import layout, local_services, report, traffic
from regions.management.demo.layout import REGIONS, DemoError
from regions.management.supervisor import Restart, Supervisor


def demo_run(*, root: Path, base_port: int, tasks: int, exit_after_tasks: bool, broker: str, vhost_prefix: str,
             status_file: Path | None, say: Callable[[str], None]) -> None:
    """Run the fleet until the tasks are done (`exit_after_tasks`) or until
    SIGINT or SIGTERM; stop everything it started either way."""
    fleet = Fleet(root=root, status_file=status_file, say=say)
    # Explicit handlers for both: a background job of a non-interactive shell
    # starts with SIGINT ignored, and Python then leaves it ignored.
    signal.signal(signal.SIGINT, fleet.on_signal)
    signal.signal(signal.SIGTERM, fleet.on_signal)
    try:
        fleet.run(base_port=base_port, tasks=tasks, exit_after_tasks=exit_after_tasks, broker=broker,
                  vhost_prefix=vhost_prefix)
    except KeyboardInterrupt:
        say("\nstopping…")
    finally:
        fleet.stopping = True
        fleet.stop_all()


# Another prefix is another demo beside this one: it gets a redis-server of its own too.
DEFAULT_VHOST_PREFIX = "meridian-demo"


class Fleet:
    def __init__(self, *, root: Path, status_file: Path | None, say: Callable[[str], None]):
        self.root, self.status_file, self.say = root, status_file, say
        self.sup: Supervisor | None = None
        self.stopping = False
        self.regions: dict[str, dict] = {}

    def on_signal(self, signum, frame) -> None:
        if self.stopping:
            return  # already stopping: a second Ctrl-C must not abandon the children
        self.stopping = True
        raise KeyboardInterrupt

    # --- set-up ---------------------------------------------------------------
    def run(self, *, base_port: int, tasks: int, exit_after_tasks: bool, broker: str, vhost_prefix: str) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        self.sup = Supervisor(cwd=Path(settings.BASE_DIR), log_dir=self.root / "logs",
                              status_file=self.status_file, say=self.say)
        self.sup.publish(phase="starting", pid=os.getpid(), dir=str(self.root))
        ports = layout.ports_free(base=base_port, n=1 + len(REGIONS))
        redis_base = self._redis(own=vhost_prefix != DEFAULT_VHOST_PREFIX, base_port=base_port)
        brokers = local_services.brokers_prepare(mode=broker, vhost_prefix=vhost_prefix, redis_base=redis_base,
                                                 say=self.say)
        self.registration_token = token_generate("mrt")
        self.your_token = token_generate("mrt")
        self.password = secrets.token_urlsafe(9)
        router_url = f"http://127.0.0.1:{ports[0]}"
        # The router's assertion key pair: it signs, every region checks (docs/security.md).
        signing_key, public_key = keypair_generate()
        self.router_env = layout.role_env(root=self.root, name="router", ROLE="router", REGION_ID="router",
                                          REGION_URL=router_url, ROUTER_SIGNING_KEY=signing_key)
        self.say(f"router at {router_url}; regions on ports {', '.join(map(str, ports[1:]))}; data in {self.root}")
        self.api_key = token_generate("mk")  # the same caller known to the router and every region
        config_repo = local_services.config_repo_create(root=self.root, say=self.say)
        for (region_id, labels, agents), port, redis_db in zip(REGIONS, ports[1:], range(len(REGIONS))):
            url = f"http://127.0.0.1:{port}"
            env = layout.region_env(root=self.root, region_id=region_id, url=url,
                                    redis_url=f"{redis_base}/{redis_db + 1}", broker_url=brokers[region_id],
                                    router_url=router_url, router_public_key=public_key,
                                    config_repo=config_repo)
            self.regions[region_id] = {"url": url, "env": env, "agents": agents, "labels": labels}
        # Static files, hashed and compressed, one copy that every web process serves.
        self._manage(self.router_env, "collectstatic", "--noinput", "-v0")
        # Each role has a database of its own: set them up side by side.
        with ThreadPoolExecutor(1 + len(self.regions)) as pool:
            jobs = [pool.submit(self._setup_router)]
            jobs += [pool.submit(self._setup_region, rid) for rid in self.regions]
            for job in jobs:
                job.result()
        self._start("router-web", self.router_env, *layout.web_args(port=ports[0]))
        for region_id, region in self.regions.items():
            port = region["url"].rsplit(":", 1)[1]
            self._start(f"{region_id}-web", region["env"], *layout.web_args(port=port))
            # Two orchestrators per region: one runs the clock jobs, the other stands by (both take reports).
            self._start(f"{region_id}-orchestrator", region["env"], *layout.orchestrator_args())
            self._start(f"{region_id}-orchestrator-standby", region["env"], *layout.orchestrator_args())
        for url in [router_url] + [r["url"] for r in self.regions.values()]:
            self._wait(lambda u=url: traffic.get_ok(f"{u}/healthz") is not None, 30, f"{url} to answer")
        for region_id, region in self.regions.items():
            for agent_id, caps, handlers in region["agents"]:
                self._start(f"agent-{agent_id}", layout.agent_env(env=region["env"], handlers=handlers,
                                                                  registration_token=self.registration_token),
                            *layout.agent_args(agent_id=agent_id, capabilities=caps, handlers=handlers,
                                               router_url=router_url, region_id=region_id),
                            restart=Restart.ON_FAILURE, tier=1)
        self.say("waiting for every region's first summary at the router…")
        self._wait(self._fleet_ready, 60, "all agents to be summarised at the router")
        report.regions_show(router_url=router_url, api_key=self.api_key, say=self.say)
        self.sup.publish(router_url=router_url, api_key=self.api_key,
                         regions={rid: r["url"] for rid, r in self.regions.items()})
        traffic.tasks_submit_and_watch(router_url=router_url, api_key=self.api_key, count=tasks, say=self.say)
        traffic.workflow_submit_and_watch(region_id="eu-west-3", region_url=self.regions["eu-west-3"]["url"],
                                          api_key=self.api_key, say=self.say)
        report.access_show(router_url=router_url, region_urls={rid: r["url"] for rid, r in self.regions.items()},
                           api_key=self.api_key, password=self.password, registration_token=self.your_token,
                           say=self.say)
        if exit_after_tasks:
            return
        self.sup.publish(phase="running")
        self.say("running; press Ctrl-C to stop everything")
        while True:
            time.sleep(1)  # the supervisor's thread watches the children

    def _setup_router(self) -> None:
        self._manage(self.router_env, "migrate", "-v0")
        self._manage(self.router_env, "router_add_registration_token", "--name", "demo",
                     f"--token={self.registration_token}")
        self._manage(self.router_env, "create_api_key", "demo", "--staff", f"--key={self.api_key}")
        # A registration token for the reader's own agents (printed at the end). Only
        # the router knows it: it hands each agent a grant for the region it chose.
        self._manage(self.router_env, "router_add_registration_token", "--name", "yours",
                     f"--token={self.your_token}")
        self._superuser(self.router_env)
        for region_id, region in self.regions.items():
            # Read by the region's processes only once they start, after this.
            region["env"]["REGION_TOKEN"] = self._manage(
                self.router_env, "router_add_region", region_id, region["url"], "--labels", region["labels"],
                "--summary-interval", "3")

    def _setup_region(self, region_id: str) -> None:
        env = self.regions[region_id]["env"]
        local_services.sample_data_write(data=self.root / region_id / "data", region_id=region_id)
        local_services.liveness_clear(url=env["REDIS_URL"], region_id=region_id)
        self._manage(env, "migrate", "-v0")
        self.say(f"{region_id}: {self._manage(env, 'sync_config').splitlines()[0]}")
        self._manage(env, "create_api_key", "demo", "--staff", f"--key={self.api_key}")
        self._superuser(env)

    def _redis(self, *, own: bool, base_port: int) -> str:
        """The shared Redis on 6379 when it answers, unless `own`: a second demo
        (another vhost prefix) sharing it would share its regions' liveness keys,
        each demo's reaper reading the other's agents and its start wiping them."""
        shared = local_services.redis_answers(6379)
        if shared and not own:
            return "redis://127.0.0.1:6379"
        if not shutil.which("redis-server"):
            if shared:
                self.say("warning: redis-server is not installed: this demo shares 127.0.0.1:6379 with any other")
                return "redis://127.0.0.1:6379"
            raise DemoError("liveness needs Redis: none answers on 127.0.0.1:6379 and redis-server is not installed")
        port = layout.ports_free(base=base_port + 90, n=1)[0]
        (self.root / "redis").mkdir(parents=True, exist_ok=True)
        self.sup.start("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(self.root / "redis")], os.environ.copy())
        self._wait(lambda: local_services.redis_answers(port), 10, "redis-server")
        return f"redis://127.0.0.1:{port}"

    def _manage(self, env: dict, *args: str) -> str:
        out = subprocess.run([sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env=env,
                             capture_output=True, text=True)
        if out.returncode:
            raise DemoError(f"manage.py {' '.join(args)} failed:\n{out.stderr[-2000:]}")
        return out.stdout.strip()

    def _superuser(self, env: dict) -> None:
        self._manage({**env, "DJANGO_SUPERUSER_PASSWORD": self.password}, "createsuperuser", "--noinput",
                     "--username", "admin", "--email", "admin@example.com")

    def _start(self, name: str, env: dict, *args: str, restart: Restart = Restart.ALWAYS, tier: int = 0) -> None:
        self.sup.start(name, [sys.executable, *args], env, restart=restart, tier=tier)

    def _fleet_ready(self) -> bool:
        response = traffic.get_ok(f"{self.router_env['REGION_URL']}/api/v1/regions",
                                  headers=traffic.auth_headers(self.api_key))
        if response is None:
            return False
        regions = {r["region_id"]: r for r in response.json()["regions"]}
        wanted = {rid: len(r["agents"]) for rid, r in self.regions.items()}
        return all(regions.get(rid) and not regions[rid]["stale"]
                   and regions[rid]["available_agents"] >= n for rid, n in wanted.items())

    def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.3)  # a crash meanwhile is restarted (and reported) by the supervisor
        raise DemoError(f"timed out waiting for {what}; logs in {self.root / 'logs'}")

    # --- tear-down ------------------------------------------------------------
    def stop_all(self) -> None:
        """Agents first (a warm shutdown finishes their work and deregisters while
        the regions still answer), then the orchestrators and web servers."""
        if self.sup is None:
            return
        self.sup.publish(phase="stopping")
        count = self.sup.stop_all()
        self.sup.publish(phase="stopped")
        status = self.sup.status()
        if count:
            self.say(f"stopped {count} processes ({status['restarts']} restarts, {status['crashes']} crashes "
                     f"while running); logs in {self.root / 'logs'}")
