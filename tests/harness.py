"""Start real regions for integration tests: a PostgreSQL database, a redis-server,
gunicorn, the orchestrator worker (with beat) and agent processes, per region."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
import requests

from project.accounts.assertions import keypair_generate

ROOT = Path(__file__).resolve().parent.parent
PG = dict(host=os.environ.get("PGHOST", "127.0.0.1"), port=int(os.environ.get("PGPORT", "5432")),
          user=os.environ.get("PGUSER", "postgres"))
REGISTRATION_TOKEN = "test-registration-token"
FAST = {
    "HEARTBEAT_INTERVAL": "0.5", "HEARTBEAT_TTL": "2", "REAPER_INTERVAL": "0.5",
    "SWEEPER_INTERVAL": "0.5", "LIVENESS_FLUSH_INTERVAL": "1", "TASK_RETRY_BACKOFF_BASE": "0.5",
    "ORCHESTRATOR_LEASE_SECONDS": "2", "ORCHESTRATOR_LEASE_RENEW_SECONDS": "0.5",
}


# tests/conftest.py sets this to a check that fails a test of the fast tier (not
# marked integration, faults or browser) when it starts a real process through
# this harness or tests/faults.py; bench/ and other users leave it None.
spawn_guard = None


def spawning(what: str) -> None:
    """Called before the harness starts a real process (or a database for one)."""
    if spawn_guard is not None:
        spawn_guard(what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def web_command(port: int, workers: int = 2) -> list[str]:
    """The web server exactly as deployed (project/gunicorn_conf.py), on a local port."""
    return [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "project" / "gunicorn_conf.py"),
            "-b", f"127.0.0.1:{port}", "-w", str(workers), "--graceful-timeout", "5"]


@contextlib.contextmanager
def json_server(answer):
    """A real HTTP listener on a free port that answers every GET and POST with
    answer(method, path, request body) -> (status, a JSON-able body); yields its
    URL and stops on exit."""
    import http.server
    import json
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            status, body = answer(self.command, self.path, self.rfile.read(length) if length else b"")
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = _answer  # noqa: N815 (http.server's names)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Quiet:
    """A listener of silent_listener(): its port and the connections it holds."""

    def __init__(self, port: int):
        self.port = port
        self.held: list = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def silent_listener(reply: bytes = b"", drip: float = 0.0, rest: bytes = b""):
    """A real listener on a free port that accepts every connection and never
    answers: a peer that is up and says nothing (a hung broker, region or router).
    With `reply`: reads the request and sends that, the start of an answer, and
    nothing more; with `drip`: then one more byte every `drip` seconds for as long
    as the connection is open (each within any read timeout, none ever the end),
    or, with `rest`, that after `drip` seconds and the connection closed. Yields
    a Quiet; closes the listener and every connection on exit."""
    import socket
    import threading

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1000)
    quiet = Quiet(sock.getsockname()[1])

    def trickle(conn):
        try:
            while True:
                time.sleep(drip)
                if rest:
                    conn.sendall(rest)
                    conn.close()
                    return
                conn.sendall(b" ")
        except OSError:  # closed by the peer, or on exit
            return

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
                if reply:
                    conn.recv(65536)
                    conn.sendall(reply)
            except OSError:
                return
            quiet.held.append(conn)
            if drip:
                threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield quiet
    finally:
        for s in [sock, *quiet.held]:
            s.close()


def pg_admin(sql: str) -> None:
    conn = psycopg2.connect(dbname="postgres", **PG)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def pg_url(name: str) -> str:
    return f"postgres://{PG['user']}@{PG['host']}:{PG['port']}/{name}"


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def holds_for(predicate, seconds: float, interval: float = 0.1, what: str = "condition") -> None:
    """Assert that a condition stays true for a whole period (the scenario's
    length, not a wait for luck)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), f"{what} stopped holding"
        time.sleep(interval)


class Template:
    """One migrated database per role and test session; each region (or router)
    is cloned from it.

    MERIDIAN_TEMPLATE_<ROLE>="<database>:<static root>" (set by bench/all.py, never
    by tests) reuses a template its caller made: nothing is migrated, and drop()
    leaves it to that caller."""

    owned = True
    # The operator's and a caller's API keys, made once in the template (its clones
    # have them, hashed as ever): a region or router started from it spends no
    # `manage.py create_api_key` process on them. None: a template reused from
    # MERIDIAN_TEMPLATE_<ROLE>, whose servers make their own.
    api_key = user_key = None

    def __init__(self, role: str = "region"):
        reuse = os.environ.get(f"MERIDIAN_TEMPLATE_{role.upper()}")
        if reuse:
            self.name, self.static_root = reuse.split(":", 1)
            self.owned = False
            return
        spawning(f"a {role} template (migrate, collectstatic)")
        self.name = f"mt_tpl_{role}_{os.getpid()}"
        pg_admin(f"DROP DATABASE IF EXISTS {self.name}")
        pg_admin(f"CREATE DATABASE {self.name}")
        env = {**os.environ, "DATABASE_URL": pg_url(self.name), "DJANGO_SETTINGS_MODULE": "project.settings",
               "ROLE": role}
        env.pop("EXTRA_APPS", None)
        # The servers started from this template serve static files as deployed:
        # hashed and compressed by collectstatic, here once per session and role
        # (side by side with the migration), into a directory of this run's own.
        self.static_root = tempfile.mkdtemp(prefix=f"meridian-static-{role}-")
        static = subprocess.Popen([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT,
                                  env={**env, "STATIC_ROOT": self.static_root})
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        self.api_key, self.user_key = (
            subprocess.run([sys.executable, "manage.py", "create_api_key", *args], cwd=ROOT, env=env, check=True,
                           capture_output=True, text=True).stdout.strip()
            for args in (("operator", "--staff"), ("caller",)))
        if static.wait(120):
            raise RuntimeError(f"collectstatic failed ({static.returncode})")

    def drop(self):
        if not self.owned:
            return
        pg_admin(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        shutil.rmtree(self.static_root, ignore_errors=True)


class RedisServer:
    def __init__(self, workdir: Path, persist: bool = False):
        """persist: keep the data across stop() and start() (an append-only file,
        fsync'd on every write), as a production Redis with `appendonly yes` does."""
        self.port = free_port()
        self.workdir = workdir
        self.persist = persist
        self.proc = None
        self.start()

    def start(self):
        spawning("a redis-server")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.persist else "no", "--appendfsync", "always",
             "--dir", str(self.workdir)],
            stdout=open(self.workdir / f"redis-{self.port}.log", "ab"), stderr=subprocess.STDOUT,
        )
        wait_for(self.ping, 10, what=f"redis on {self.port}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def persist_on(self) -> None:
        """Turn persistence on in the running server (see persist): a region's Redis
        starts without it; a test that restarts it with its data calls this first."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        client.config_set("appendfsync", "always")
        client.config_set("appendonly", "yes")
        self.persist = True

        def written() -> bool:
            info = client.info("persistence")
            return info["aof_enabled"] == 1 and not info["aof_rewrite_in_progress"] \
                and not info["aof_rewrite_scheduled"]

        wait_for(written, 10, what=f"redis on {self.port} writing its append-only file")
        client.close()

    def wipe(self) -> None:
        """Delete the data files of a stopped server: its next start() is empty."""
        shutil.rmtree(self.workdir / "appendonlydir", ignore_errors=True)
        (self.workdir / "dump.rdb").unlink(missing_ok=True)

    def restart(self, keep_data: bool = True) -> None:
        """keep_data needs persist (or persist_on()); without it the data is lost anyway."""
        self.stop()
        if not keep_data:
            self.wipe()
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def rabbitmqctl(*args: str) -> str:
    out = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
    if out.returncode:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


class RabbitVhost:
    """A vhost of its own on the machine's RabbitMQ: a region's private broker."""

    HOST = os.environ.get("RABBITMQ_HOST", "127.0.0.1")
    PORT = int(os.environ.get("RABBITMQ_PORT", "5672"))

    def __init__(self, name: str):
        self.name = name
        self.create()

    def create(self) -> None:
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")

    def delete(self) -> None:
        try:
            rabbitmqctl("delete_vhost", self.name)
        except RuntimeError:
            pass

    def url(self, port: int | None = None) -> str:
        return f"amqp://guest:guest@{self.HOST}:{port or self.PORT}/{self.name}"

    def queue_depths(self) -> dict[str, int]:
        out = rabbitmqctl("list_queues", "-p", self.name, "name", "messages", "--no-table-headers")
        return {name: int(n) for name, n in (line.split() for line in out.splitlines() if line.strip())}


class Proc:
    def __init__(self, name: str, args: list[str], env: dict, log: Path):
        spawning(f"a {name} process")
        self.name = name
        self.log = log
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, sig: int, group: bool = True) -> None:
        """To the whole process group (a machine dying), or to the main process
        alone (what an init system or Kubernetes sends)."""
        try:
            os.killpg(self.popen.pid, sig) if group else os.kill(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15) -> None:
        if self.alive():
            self.signal(signal.SIGTERM, group=False)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of its process group (a pool or beat process orphaned
        # by a main process that died first) goes too: no test leaves a process.
        self.signal(signal.SIGKILL)
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# What a spawned process never takes from the test run's environment: the apps of
# both roles, and the in-process tests' router key pair (a harness Router makes its own).
NOT_INHERITED = {"EXTRA_APPS", "ROUTER_SIGNING_KEY", "ROUTER_PUBLIC_KEYS", "ROUTER_PUBLIC_KEY"}


class Region:
    def __init__(self, template: Template, region_id: str | None = None, broker: str = "amqp",
                 database_url: str | None = None, **env_overrides):
        """broker: "amqp" (a RabbitMQ vhost of its own, the default) or "redis"
        (the region's own redis-server serves as broker too). database_url: a
        migrated database elsewhere (e.g. tests.faults.PrivatePostgres) instead of
        a clone of the template on the shared server; the caller owns it."""
        spawning("a region")
        self.region_id = region_id or f"r{uuid.uuid4().hex[:6]}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"meridian-{self.region_id}-"))
        self.db = f"mt_{self.region_id.replace('-', '_')}_{uuid.uuid4().hex[:6]}"
        self.own_db = database_url is None
        self.template = template
        self.database_url = database_url or pg_url(self.db)
        if self.own_db:
            pg_admin(f"CREATE DATABASE {self.db} TEMPLATE {template.name}")
        self.redis = RedisServer(self.dir)
        self.vhost = RabbitVhost(f"meridian-test-{self.db}") if broker == "amqp" else None
        broker_url = self.vhost.url() if self.vhost else self.redis.url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (self.dir / "data").mkdir()
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in NOT_INHERITED}, **FAST,
            "DJANGO_SETTINGS_MODULE": "project.settings", "ROLE": "region", "REGION_ID": self.region_id,
            "REGION_URL": self.url, "DATABASE_URL": self.database_url, "REDIS_URL": self.redis.url,
            "CELERY_BROKER_URL": broker_url, "AGENT_REGISTRATION_TOKEN": REGISTRATION_TOKEN,
            "SECRET_KEY": f"secret-{self.region_id}", "AGENT_DATA_ROOT": str(self.dir / "data"),
            "AGENT_STATE_DIR": str(self.dir / "agents"), "STATIC_ROOT": template.static_root,
            "PYTHONUNBUFFERED": "1", **{k: str(v) for k, v in env_overrides.items()},
        }
        self.procs: list[Proc] = []
        self.web = self.orchestrator = None
        self.session = requests.Session()

    # --- processes -----------------------------------------------------------
    def _spawn(self, name: str, args: list[str], env: dict | None = None) -> Proc:
        proc = Proc(name, args, {**self.env, **(env or {})}, self.dir / f"{name}.log")
        self.procs.append(proc)
        return proc

    def manage(self, *args: str) -> str:
        spawning(f"manage.py {args[0] if args else ''}")
        out = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True,
                             capture_output=True, text=True)
        return out.stdout.strip()

    def start_web(self, workers: int = 2) -> Proc:
        self.web = self._spawn("web", web_command(self.port, workers))
        wait_for(self._healthy, 30, what=f"{self.region_id} web server")
        return self.web

    def start_orchestrator(self, name: str = "orchestrator") -> Proc:
        """An orchestrator standing for the clock lease; the first one is .orchestrator."""
        proc = self._spawn(name, [sys.executable, "manage.py", "run_region_worker", "--beat", "--concurrency", "2"])
        if name == "orchestrator":
            self.orchestrator = proc
        return proc

    def start(self, api_key: str | None = None) -> "Region":
        """api_key: the operator's key to import (one the router knows too);
        otherwise the template's. Returns once the web answers and the orchestrator
        consumes and runs the clock jobs (the two start side by side)."""
        orchestrator = self.start_orchestrator()
        self.start_web()
        self._keys(api_key)
        self.wait_leading(orchestrator)
        return self

    def wait_leading(self, orchestrator: Proc, timeout: float = 40) -> None:
        """Until the orchestrator consumes (Celery's "ready.") and holds the clock lease."""
        wait_for(lambda: "ready." in orchestrator.log.read_text(errors="replace") or not orchestrator.alive(),
                 timeout, what=f"{self.region_id} orchestrator ready")
        assert orchestrator.alive(), orchestrator.tail()
        wait_for(lambda: self.db_query("SELECT 1 FROM regions_clocklease WHERE expires_at > now()"), timeout,
                 what=f"{self.region_id} clock lease held")

    def _keys(self, api_key: str | None) -> None:
        cloned = self.own_db and self.template.api_key is not None  # the template's keys are in its database
        if api_key or not cloned:
            self.api_key = self.manage("create_api_key", "operator", "--staff", *(["--key", api_key] if api_key else []))
        else:
            self.api_key = self.template.api_key
        self.user_key = self.template.user_key if cloned else self.manage("create_api_key", "caller")

    def _healthy(self) -> bool:
        try:
            return self.session.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def agent(self, capabilities: str | None, agent_id: str | None = None, concurrency: int = 1,
              wait: bool = True, handlers: str | None = None, env: dict | None = None) -> Proc:
        """capabilities None: every handler loaded (the built-ins, or `handlers`)."""
        agent_id = agent_id or f"ag-{uuid.uuid4().hex[:6]}"
        proc = self._spawn(f"agent-{agent_id}", [
            sys.executable, "manage.py", "run_agent", "--agent-id", agent_id,
            *(["--capabilities", capabilities] if capabilities else []),
            *(["--handlers", handlers] if handlers else []),
            "--concurrency", str(concurrency), "--region-url", self.url, "--loglevel", "INFO",
        ], env)
        proc.agent_id = agent_id
        if wait:
            wait_for(lambda: "ready." in proc.log.read_text(errors="replace") or not proc.alive(), 40,
                     what=f"agent {agent_id} ready")
            assert proc.alive(), proc.tail()
        return proc

    def stop(self) -> None:
        """The test is over: every process killed at once (a test that checks a
        graceful stop makes it itself, Proc.stop), then its stores dropped."""
        for proc in self.procs:
            proc.signal(signal.SIGKILL)
        for proc in self.procs:
            proc.stop()
        self.redis.stop()
        if self.vhost:
            self.vhost.delete()
        if self.own_db:
            pg_admin(f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
        if os.environ.get("MERIDIAN_KEEP_LOGS"):  # to read a failed run's process logs afterwards
            print(f"logs of region {self.region_id} kept in {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail()}" for p in self.procs)

    # --- HTTP ------------------------------------------------------------------
    def call(self, method: str, path: str, key: str | None = "", **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        key = self.api_key if key == "" else key
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return self.session.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kwargs)

    def submit(self, capability: str, payload: dict | None = None, key: str | None = "", **fields) -> dict:
        r = self.call("POST", "/api/v1/tasks", key=key, json={"capability": capability,
                                                              "payload": payload or {}, **fields})
        assert r.status_code in (200, 201), r.text
        return r.json()

    def task(self, task_id: str) -> dict:
        r = self.call("GET", f"/api/v1/tasks/{task_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def agent_info(self, agent_id: str) -> dict:
        r = self.call("GET", f"/api/v1/agents/{agent_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_task(self, task_id: str, statuses=("succeeded",), timeout: float = 30) -> dict:
        try:
            return wait_for(lambda: (t := self.task(task_id))["status"] in statuses and t, timeout,
                            what=f"task {task_id} in {statuses}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.task(task_id)}\n{self.logs()}") from None

    @contextlib.contextmanager
    def orchestrator_frozen(self, timeout: float = 30):
        """SIGSTOP the orchestrator (worker and beat) between two transactions:
        frozen inside one, it would hold its row locks as long as the freeze
        lasts (or until DB_IDLE_IN_TRANSACTION_SECONDS), and a request waiting
        for one of them would hang instead of showing what the test looks for."""
        name = "meridian region %s run_region_worker" % self.region_id
        busy = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() " \
               "AND application_name = %s AND state <> 'idle'"

        def freeze() -> bool:
            self.orchestrator.signal(signal.SIGSTOP)
            settled = time.monotonic() + 0.5  # a statement under way finishes; its transaction may not
            while self.db_query(busy, (name,))[0][0]:
                if time.monotonic() > settled:
                    self.orchestrator.signal(signal.SIGCONT)
                    return False
                time.sleep(0.02)
            return True

        wait_for(freeze, timeout, interval=0.05, what="the orchestrator frozen outside a transaction")
        try:
            yield
        finally:
            self.orchestrator.signal(signal.SIGCONT)

    def db_query(self, sql: str, params=()) -> list[tuple]:
        conn = psycopg2.connect(self.database_url)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            conn.close()


class Router(Region):
    """The Global Task Router: gunicorn with ROLE=router on its own database."""

    def __init__(self, template: Template):
        super().__init__(template, region_id="router", broker="none")
        self.env["ROLE"] = "router"
        # A key pair of this router's own: it signs forwards and registration
        # grants, and every region it adds trusts the public half.
        self.signing_key, self.public_key = keypair_generate()
        self.env["ROUTER_SIGNING_KEY"] = self.signing_key
        self.redis.stop()  # the router needs no Redis

    def start(self, api_key: str | None = None) -> "Router":
        self.start_web()
        self._keys(api_key)
        self.manage("router_add_registration_token", "--token", REGISTRATION_TOKEN)
        return self

    def add_region(self, region: Region, labels: str = "", interval: float = 1.0) -> str:
        """Register a region, point its summaries at this router and make it trust
        this router's key (a web already started is restarted to read it; the
        other processes read the rest when they start)."""
        token = self.manage("router_add_region", region.region_id, region.url, "--labels", labels,
                            "--summary-interval", str(interval))
        region.env.update(ROUTER_URL=self.url, REGION_TOKEN=token, SUMMARY_INTERVAL=str(interval),
                          ROUTER_PUBLIC_KEYS=self.public_key)
        if getattr(region, "web", None) is not None and region.web.alive():
            # Already serving: its web must learn this router's key to take what it forwards.
            region.web.stop()
            region.procs.remove(region.web)
            region.start_web()
        return token

    def regions(self) -> dict:
        r = self.call("GET", "/api/v1/regions")
        assert r.status_code == 200, r.text
        return {x["region_id"]: x for x in r.json()["regions"]}


def config_repo(path: Path):
    """A git repository of configuration at `path`; returns commit(content) -> sha."""
    import yaml

    def git(*args):
        return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, text=True).stdout.strip()

    path.mkdir()
    git("init", "-q", "-b", "main")
    git("config", "user.email", "ops@example.com")
    git("config", "user.name", "ops")

    def commit(content: dict) -> str:
        (path / "global.yaml").write_text(yaml.safe_dump(content))
        git("add", "-A")
        git("commit", "-q", "-m", "config")
        return git("rev-parse", "HEAD")

    return commit
