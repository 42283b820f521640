"""One command, the main job: a Global Task Router and three regions on this
machine, each with its own database, broker, beat and agents, doing real work.

Storage: SQLite per role. Broker: a RabbitMQ vhost per region on the local
RabbitMQ (``meridian-demo-<region>``, deleted and re-created at start so a
previous run's messages are gone, as guest); if RabbitMQ is not installed or
does not answer, a Redis database per region on the liveness Redis, with a
warning (Redis emulates acknowledgements: the weaker broker). Liveness needs
Redis: the local one (127.0.0.1:6379, a database number per region) or, if none
answers, a redis-server started for the demo.

Every process runs under a supervisor (``regions/management/supervisor.py``): a
crash is restarted with backoff; an agent that exits 0 (revoked, drained) or 78
(refused for good) stays stopped. The demo runs until SIGINT (Ctrl-C) or
SIGTERM, then stops agents first and the rest after. ``--status-file`` writes
each process's state as JSON, for scripts such as ``bench/soak.py``.
"""
from __future__ import annotations

import csv
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from project.accounts.tokens import token_generate
from regions.management.supervisor import Restart, Supervisor

# A team's own task code, in a package of its own (examples/acme-tasks): agents
# load it with --handlers, the way a user's agents load theirs.
ACME = Path(settings.BASE_DIR) / "examples" / "acme-tasks"
ACME_HANDLERS = "acme_tasks.tasks"

REGIONS = [
    # region id, labels, agents: (agent id, capabilities; None: every handler of the
    # modules, handler modules; None: the built-ins)
    ("us-east-1", "us", [("us-ingest-1", "data_ingestion,echo", None), ("us-files-1", "file_processing,echo", None),
                         ("us-acme-1", None, ACME_HANDLERS)]),
    ("eu-west-3", "eu,gdpr", [("eu-ingest-1", "data_ingestion,echo", None), ("eu-ingest-2", "data_ingestion", None),
                              ("eu-acme-1", None, ACME_HANDLERS)]),
    ("ap-southeast-1", "apac", [("ap-files-1", "file_processing,sleep,echo", None)]),
]


TEXT = ("Meridian runs a fleet of agents across regions. Each region keeps its own database, broker and "
        "clock; the router only tells agents and callers where to go. Tasks stay in their region, and so "
        "does their data. An agent that dies is noticed within seconds, and its work runs again elsewhere.")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _tcp_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
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


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class Command(BaseCommand):
    help = "Run the local multi-region fleet: router + us-east-1, eu-west-3, ap-southeast-1 with agents."

    def add_arguments(self, parser):
        parser.add_argument("--base-port", type=int, default=8000)
        parser.add_argument("--dir", default=str(Path(settings.BASE_DIR) / "var" / "demo"))
        parser.add_argument("--tasks", type=int, default=12, help="tasks to submit through the router")
        parser.add_argument("--exit-after-tasks", action="store_true",
                            help="stop once the tasks are done (for tests and CI)")
        parser.add_argument("--broker", choices=["auto", "rabbitmq", "redis"], default="auto",
                            help="auto: RabbitMQ if it answers, else Redis (with a warning)")
        parser.add_argument("--vhost-prefix", default="meridian-demo",
                            help="RabbitMQ vhosts are <prefix>-<region>")
        parser.add_argument("--status-file", default=None,
                            help="write every process's state (pid, state, restarts, crashes) here as JSON")

    def handle(self, *args, base_port, dir, tasks, exit_after_tasks, broker, vhost_prefix, status_file,
               **options):
        self.root = Path(dir)
        self.broker_mode, self.vhost_prefix = broker, vhost_prefix
        self.sup: Supervisor | None = None
        self.status_file = Path(status_file).resolve() if status_file else None
        self.stopping = False
        # Explicit handlers for both: a background job of a non-interactive shell
        # starts with SIGINT ignored, and Python then leaves it ignored.
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            self._run(base_port, tasks, exit_after_tasks)
        except KeyboardInterrupt:
            self.say("\nstopping…")
        finally:
            self.stopping = True
            self._stop_all()

    def _on_signal(self, signum, frame) -> None:
        if self.stopping:
            return  # already stopping: a second Ctrl-C must not abandon the children
        self.stopping = True
        raise KeyboardInterrupt

    # --- set-up ---------------------------------------------------------------
    def _run(self, base_port: int, tasks: int, exit_after: bool) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        self.sup = Supervisor(cwd=Path(settings.BASE_DIR), log_dir=self.root / "logs",
                              status_file=self.status_file, say=self.say)
        self.sup.publish(phase="starting", pid=os.getpid(), dir=str(self.root))
        ports = self._ports(base_port, 1 + len(REGIONS))
        redis_base = self._redis()
        brokers = self._brokers(redis_base)
        self.registration_token = token_generate("mrt")
        self.your_token = token_generate("mrt")
        self.password = secrets.token_urlsafe(9)
        router_url = f"http://127.0.0.1:{ports[0]}"
        self.router_env = self._env("router", ROLE="router", REGION_ID="router", REGION_URL=router_url)
        self.say(f"router at {router_url}; regions on ports {', '.join(map(str, ports[1:]))}; data in {self.root}")
        self.api_key = token_generate("mk")  # the same caller known to the router and every region
        config_repo, config_sha = self._config_repo()
        self.regions = {}
        for (region_id, labels, agents), port, redis_db in zip(REGIONS, ports[1:], range(len(REGIONS))):
            url = f"http://127.0.0.1:{port}"
            env = self._env(region_id, ROLE="region", REGION_ID=region_id, REGION_URL=url,
                            REDIS_URL=f"{redis_base}/{redis_db + 1}", CELERY_BROKER_URL=brokers[region_id],
                            AGENT_DATA_ROOT=str(self.root / region_id / "data"), ROUTER_URL=router_url,
                            SUMMARY_INTERVAL="3", HEARTBEAT_INTERVAL="2", AGENT_TASK_EVENTS="1",  # docs/flower.md
                            HEARTBEAT_TTL="6", REAPER_INTERVAL="2", LIVENESS_FLUSH_INTERVAL="2",
                            SWEEPER_INTERVAL="1", AGENT_REGISTRATION_TOKEN=self.registration_token,
                            CONFIG_REPO=str(config_repo), CONFIG_REF="main", CONFIG_SYNC_INTERVAL="10")
            self.regions[region_id] = {"url": url, "env": env, "agents": agents, "labels": labels}
        # Static files, hashed and compressed, one copy that every web process serves.
        self._manage(self.router_env, "collectstatic", "--noinput", "-v0")
        # Each role has a database of its own: set them up side by side.
        with ThreadPoolExecutor(1 + len(self.regions)) as pool:
            jobs = [pool.submit(self._setup_router)]
            jobs += [pool.submit(self._setup_region, rid) for rid in self.regions]
            for job in jobs:
                job.result()
        web = ("-m", "gunicorn", "-c", str(Path(settings.BASE_DIR) / "project" / "gunicorn_conf.py"), "-w", "2", "-b")
        self._start("router-web", self.router_env, *web, f"127.0.0.1:{ports[0]}")
        for region_id, region in self.regions.items():
            port = region["url"].rsplit(":", 1)[1]
            self._start(f"{region_id}-web", region["env"], *web, f"127.0.0.1:{port}")
            self._start(f"{region_id}-orchestrator", region["env"], "manage.py", "run_region_worker",
                        "--beat", "--concurrency", "2")
        for url in [router_url] + [r["url"] for r in self.regions.values()]:
            self._wait(lambda u=url: self._get(f"{u}/healthz") is not None, 30, f"{url} to answer")
        for region_id, region in self.regions.items():
            for agent_id, caps, handlers in region["agents"]:
                # Discovery through the router, like the article's agents.
                env = {**region["env"], "PYTHONPATH": str(ACME)} if handlers else region["env"]
                self._start(f"agent-{agent_id}", env, "manage.py", "run_agent",
                            *(["--capabilities", caps] if caps else []), *(["--handlers", handlers] if handlers else []),
                            "--agent-id", agent_id, "--router-url", router_url, "--region", region_id,
                            "--concurrency", "2", "--loglevel", "WARNING", restart=Restart.ON_FAILURE, tier=1)
        self.say("waiting for every region's first summary at the router…")
        self._wait(self._fleet_ready, 60, "all agents to be summarised at the router")
        self._show_regions(router_url)
        self.sup.publish(router_url=router_url, api_key=self.api_key,
                         regions={rid: r["url"] for rid, r in self.regions.items()})
        self._submit_and_watch(router_url, tasks)
        self._print_access(router_url)
        if exit_after:
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
        # A registration token for the reader's own agents (printed at the end),
        # known to the router and to every region.
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
        self._sample_data(self.root / region_id / "data", region_id)
        self._clear_liveness(env["REDIS_URL"], region_id)
        self._manage(env, "migrate", "-v0")
        self.say(f"{region_id}: {self._manage(env, 'sync_config').splitlines()[0]}")
        self._manage(env, "create_api_key", "demo", "--staff", f"--key={self.api_key}")
        self._manage(env, "create_registration_token", "--name", "yours", f"--token={self.your_token}")
        self._superuser(env)

    def _config_repo(self) -> tuple[Path, str]:
        """The example configuration repository as a real git repository, plus a
        demo commit on top (short intervals, so the demo is lively)."""
        repo = self.root / "config-repo"
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
        (repo / "global.yaml").write_text(text)
        (repo / "regions" / "us-east-1.yaml").write_text("summary_interval: 3\n")
        git("commit", "-q", "-am", "Demo: short heartbeat and summary intervals")
        sha = git("rev-parse", "HEAD")
        self.say(f"configuration repository {repo} at {sha[:12]}")
        return repo, sha

    def _ports(self, base: int, n: int) -> list[int]:
        ports, port = [], base
        while len(ports) < n:
            if _port_free(port):
                ports.append(port)
            port += 1
        return ports

    def _brokers(self, redis_base: str) -> dict[str, str]:
        """A broker per region: a fresh RabbitMQ vhost each, or a Redis database each."""
        problem = None
        if self.broker_mode in ("auto", "rabbitmq"):
            if not shutil.which("rabbitmqctl"):
                problem = "rabbitmqctl is not installed"
            elif not _tcp_answers(5672):
                problem = "nothing answers on 127.0.0.1:5672"
            else:
                vhosts = {rid: f"{self.vhost_prefix}-{rid}" for rid, _, _ in REGIONS}
                try:
                    with ThreadPoolExecutor(len(vhosts)) as pool:
                        list(pool.map(_rabbit_vhost_fresh, vhosts.values()))
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                    problem = str(exc)
                else:
                    self.say(f"broker: RabbitMQ on 127.0.0.1:5672, vhosts {', '.join(vhosts.values())}")
                    return {rid: f"amqp://guest:guest@127.0.0.1:5672/{vhost}" for rid, vhost in vhosts.items()}
            if self.broker_mode == "rabbitmq":
                raise CommandError(f"RabbitMQ is not usable: {problem}")
        import redis

        urls = {}
        for n, (region_id, _, _) in enumerate(REGIONS):
            urls[region_id] = f"{redis_base}/{len(REGIONS) + 1 + n}"  # after the liveness databases
            redis.Redis.from_url(urls[region_id]).flushdb()  # a previous run's messages
        if problem:
            self.say(f"WARNING: RabbitMQ is not usable ({problem}); falling back to a Redis broker "
                     f"({', '.join(urls.values())}). Redis is the weaker broker: acknowledgements are "
                     f"emulated, and a message can wait out the visibility timeout after a crash.")
        else:
            self.say(f"broker: Redis ({', '.join(urls.values())})")
        return urls

    def _redis(self) -> str:
        if _redis_answers(6379):
            return "redis://127.0.0.1:6379"
        if not shutil.which("redis-server"):
            raise CommandError("liveness needs Redis: none answers on 127.0.0.1:6379 and redis-server is not installed")
        port = self._ports(6390, 1)[0]
        (self.root / "redis").mkdir(parents=True, exist_ok=True)
        self.sup.start("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(self.root / "redis")], os.environ.copy())
        self._wait(lambda: _redis_answers(port), 10, "redis-server")
        return f"redis://127.0.0.1:{port}"

    def _clear_liveness(self, url: str, region_id: str) -> None:
        """Forget a previous demo run's liveness keys (only this region's)."""
        import redis

        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(f"m:{region_id}:*"))
        if keys:
            client.delete(*keys)

    def _env(self, name: str, **extra) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "EXTRA_APPS")}
        env.update(DJANGO_SETTINGS_MODULE="project.settings", PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING",
                   DATABASE_URL=f"sqlite:///{self.root / name / 'db.sqlite3'}", SECRET_KEY=secrets.token_urlsafe(32),
                   ALLOWED_HOSTS="127.0.0.1,localhost", VAR_DIR=str(self.root / name / "var"),
                   STATIC_ROOT=str(self.root / "static"), **extra)
        (self.root / name).mkdir(parents=True, exist_ok=True)
        return env

    def _manage(self, env: dict, *args: str) -> str:
        out = subprocess.run([sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env=env,
                             capture_output=True, text=True)
        if out.returncode:
            raise CommandError(f"manage.py {' '.join(args)} failed:\n{out.stderr[-2000:]}")
        return out.stdout.strip()

    def _superuser(self, env: dict) -> None:
        self._manage({**env, "DJANGO_SUPERUSER_PASSWORD": self.password}, "createsuperuser", "--noinput",
                     "--username", "admin", "--email", "admin@example.com")

    def _start(self, name: str, env: dict, *args: str, restart: Restart = Restart.ALWAYS, tier: int = 0) -> None:
        self.sup.start(name, [sys.executable, *args], env, restart=restart, tier=tier)

    def _stop_all(self) -> None:
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

    # --- the work ----------------------------------------------------------------
    def _sample_data(self, data: Path, region_id: str) -> None:
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

    def _get(self, url: str, **kw):
        try:
            response = requests.get(url, timeout=3, **kw)
        except requests.RequestException:
            return None
        return response if response.status_code == 200 else None

    def _auth(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"}

    def _fleet_ready(self) -> bool:
        response = self._get(f"{self.router_env['REGION_URL']}/api/v1/regions", headers=self._auth())
        if response is None:
            return False
        regions = {r["region_id"]: r for r in response.json()["regions"]}
        wanted = {rid: len(r["agents"]) for rid, r in self.regions.items()}
        return all(regions.get(rid) and not regions[rid]["stale"]
                   and regions[rid]["available_agents"] >= n for rid, n in wanted.items())

    def _show_regions(self, router_url: str) -> None:
        regions = self._get(f"{router_url}/api/v1/regions", headers=self._auth()).json()["regions"]
        self.say("\nregions at the router:")
        for r in regions:
            caps = ", ".join(f"{c} {v['idle']}/{v['count']} idle" for c, v in sorted(r["capabilities"].items()))
            self.say(f"  {r['region_id']:15} labels={','.join(r['labels']):8} agents={r['available_agents']}  {caps}")

    def _submit_and_watch(self, router_url: str, count: int) -> None:
        plan = [
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
        self.say(f"\nsubmitting {count} tasks through the router ({router_url}/api/v1/tasks):")
        submitted = []
        for i in range(count):
            capability, residency, payload = plan[i % len(plan)]
            body = {"capability": capability, "payload": payload, "idempotency_key": f"demo-{i}"}
            if residency:
                body["residency"] = residency
            started = time.monotonic()
            response = requests.post(f"{router_url}/api/v1/tasks", json=body, headers=self._auth(), timeout=15)
            if response.status_code not in (200, 201):
                self.say(f"  ! {capability}: {response.status_code} {response.text[:200]}")
                continue
            data = response.json()
            submitted.append((data["region_id"], data["task"]["url"], capability, residency, started))
        self.say(f"  {'region':15} {'capability':16} {'residency':9} {'status':10} {'attempt':7} {'agent':12} "
                 f"{'seconds':>7}  result")
        done = 0
        deadline = time.monotonic() + 90
        pending = list(submitted)
        while pending and time.monotonic() < deadline:
            for item in list(pending):
                region_id, url, capability, residency, started = item
                response = self._get(url, headers=self._auth())
                if response is None:
                    continue
                task = response.json()
                if task["status"] in ("succeeded", "failed", "cancelled"):
                    pending.remove(item)
                    done += task["status"] == "succeeded"
                    self.say(f"  {region_id:15} {capability:16} {residency or '-':9} {task['status']:10} "
                             f"{task['attempt']:<7} {task['agent']:12} {time.monotonic() - started:7.2f}  "
                             f"{self._brief(task)}")
            time.sleep(0.2)
        self.say(f"\n{done} of {len(submitted)} tasks completed"
                 f"{'' if not pending else f'; {len(pending)} still running'}")
        if done != len(submitted):
            raise CommandError("not every task completed; see the logs")

    @staticmethod
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

    def _print_access(self, router_url: str) -> None:
        self.say("\nadmin consoles (user admin, password " + self.password + "):")
        self.say(f"  router          {router_url}/admin/")
        for region_id, region in self.regions.items():
            self.say(f"  {region_id:15} {region['url']}/admin/")
        self.say(f"API key for every role: {self.api_key}")
        self.say(f"  curl -H 'Authorization: Bearer {self.api_key}' '{router_url}/api/v1/route?capability=data_ingestion'")
        base, python = Path(settings.BASE_DIR), Path(sys.executable)
        self.say("\nyour own agent, from another shell (its handlers: examples/acme-tasks/acme_tasks/tasks.py):")
        self.say(f"  cd {base} && PYTHONPATH={ACME} {python} manage.py run_agent --handlers {ACME_HANDLERS} "
                 f"--router-url {router_url} --region eu-west-3 --registration-token {self.your_token} "
                 "--agent-id my-agent-1")
        self.say("submit and wait with the CLI (pip install ./client gives `meridian`; --json for scripts):")
        self.say(f"  export MERIDIAN_URL={router_url} MERIDIAN_API_KEY={self.api_key}")
        self.say(f"  {python.parent / 'meridian'} submit text_stats --residency eu --payload "
                 "'{\"text\": \"Meridian runs your code. Your code runs near its data.\"}' --wait")

    def _wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.3)  # a crash meanwhile is restarted (and reported) by the supervisor
        raise CommandError(f"timed out waiting for {what}; logs in {self.root / 'logs'}")

    def say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()
