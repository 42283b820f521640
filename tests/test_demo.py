"""The README's run command works and keeps working: the demo starts a router and
three regions on RabbitMQ, runs tasks through the router on real agents,
restarts what crashes, leaves alone what was told to stop, and stops cleanly on
SIGINT even as a background job of a script."""
import json
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from regions.management.demo import layout, local_services
from regions.management.supervisor import EX_CONFIG, Restart, Supervisor
from tests.accounting import record
from tests.harness import ROOT, RedisServer, json_server, rabbitmqctl, wait_for

pytestmark = pytest.mark.integration

VHOST_PREFIX = f"meridian-demo-t{os.getpid()}"
REGIONS = ("us-east-1", "eu-west-3", "ap-southeast-1")


def demo_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "EXTRA_APPS", "REDIS_URL", "CELERY_BROKER_URL", "REGION_ID")}
    env["DJANGO_SETTINGS_MODULE"] = "project.settings"
    return env


def demo_base_port() -> int:
    """Four free ports in a row below the kernel's ephemeral range (32768+): the
    demo binds them only after its set-up, and an ephemeral port (another test's
    free_port(), any outgoing connection) could be taken by then."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32000, 4)
        if all(_port_bindable(base + i) for i in range(4)):
            return base
    raise AssertionError("no four free ports in a row between 20000 and 32000")


def _port_bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def drop_vhosts(prefix: str) -> None:
    for region in REGIONS:
        try:
            rabbitmqctl("delete_vhost", f"{prefix}-{region}")
        except RuntimeError:
            pass


# --- pieces, without the whole fleet -------------------------------------------------------

def test_supervisor_restarts_crashes_with_backoff_and_leaves_requested_stops_alone(tmp_path):
    said = []
    sup = Supervisor(cwd=ROOT, log_dir=tmp_path / "logs", status_file=tmp_path / "status.json", say=said.append,
                     backoff_min=0.05, backoff_max=0.2, poll_interval=0.02)
    exit_with = lambda code: [sys.executable, "-c", f"import sys; sys.exit({code})"]  # noqa: E731
    try:
        sup.start("crashes", exit_with(3), os.environ.copy(), restart=Restart.ON_FAILURE)
        sup.start("done", exit_with(0), os.environ.copy(), restart=Restart.ON_FAILURE)
        sup.start("refused", exit_with(EX_CONFIG), os.environ.copy(), restart=Restart.ON_FAILURE)
        sup.start("server", exit_with(0), os.environ.copy(), restart=Restart.ALWAYS)
        sup.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], os.environ.copy())

        def status():
            return json.loads((tmp_path / "status.json").read_text())["processes"]

        wait_for(lambda: status()["crashes"]["restarts"] >= 4 and status()["server"]["restarts"] >= 2, 20,
                 what="crashed processes to be restarted")
        procs = status()
        assert procs["done"]["state"] == "stopped" and procs["done"]["restarts"] == 0
        assert procs["refused"]["state"] == "refused" and procs["refused"]["restarts"] == 0
        assert procs["crashes"]["last_exit"] == 3 and procs["sleeper"]["state"] == "running"
        # Exponential backoff, capped.
        delays = [float(line.rsplit(" in ", 1)[1].split("s ")[0]) for line in said
                  if line.startswith("supervisor: crashes exited")]
        assert delays[:4] == [0.05, 0.1, 0.2, 0.2]
        assert any("exit code 3" in line and "restart #1" in line for line in said)
        assert any("done stopped on request" in line for line in said)
    finally:
        sup.stop_all(timeout=5)
    assert status()["sleeper"]["state"] == "terminated"


def test_supervisor_reports_a_child_killed_by_a_signal_and_restarts_it(tmp_path):
    said = []
    sup = Supervisor(cwd=ROOT, log_dir=tmp_path, status_file=None, say=said.append, backoff_min=0.05,
                     poll_interval=0.02)
    try:
        child = sup.start("victim", [sys.executable, "-c", "import time; time.sleep(60)"], os.environ.copy(),
                          restart=Restart.ON_FAILURE)
        first = child.pid
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: child.restarts == 1 and child.state.value == "running", 10, what="restart")
        assert child.pid != first
        assert any("killed by SIGKILL" in line for line in said)
    finally:
        sup.stop_all(timeout=5)


def test_demo_falls_back_to_a_redis_broker_with_a_warning_without_rabbitmq(tmp_path, monkeypatch):
    monkeypatch.setattr(local_services.shutil, "which", lambda name: None if name == "rabbitmqctl" else "/bin/true")
    redis_server = RedisServer(tmp_path)
    try:
        said = []
        urls = local_services.brokers_prepare(mode="auto", vhost_prefix="unused",
                                              redis_base=f"redis://127.0.0.1:{redis_server.port}", say=said.append)
    finally:
        redis_server.stop()
    assert sorted(urls) == sorted(REGIONS)
    assert len(set(urls.values())) == 3 and all(u.startswith("redis://") for u in urls.values())
    assert any("WARNING" in line and "weaker broker" in line for line in said)


def test_run_agent_exits_78_when_registration_is_refused_for_good(tmp_path):
    refusal = {"error": "forbidden", "detail": "Agent x is revoked."}
    with json_server(lambda *request: (403, refusal)) as url:
        out = subprocess.run(
            [sys.executable, "manage.py", "run_agent", "--capabilities", "echo", "--agent-id", "x",
             "--router-url", url, "--registration-token", "mrt_x"],
            cwd=ROOT, env={**demo_env(), "VAR_DIR": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    assert out.returncode == EX_CONFIG, out.stderr[-2000:]
    assert "refused registration (403)" in out.stderr


# --- one running demo, started like a script would -----------------------------------------

class Demo:
    def __init__(self, root: Path):
        self.root = root
        self.status_file = root / "status.json"
        self.out = root / "demo.out"
        self.prefix = f"{VHOST_PREFIX}-bg"
        cmd = (f'"{sys.executable}" manage.py demo --tasks 8 --base-port {demo_base_port()} --dir "{root / "demo"}" '
               f'--status-file "{self.status_file}" --vhost-prefix {self.prefix} > "{self.out}" 2>&1 & wait $!')
        # A background job of a non-interactive shell: it starts with SIGINT ignored.
        self.shell = subprocess.Popen(["bash", "-c", cmd], cwd=ROOT, env=demo_env())

    def status(self) -> dict:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def process(self, name: str) -> dict:
        return self.status()["processes"][name]

    def text(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.status()['api_key']}"}

    def submit(self, capability: str, payload: dict, residency: str | None = None) -> str:
        body = {"capability": capability, "payload": payload}
        if residency:
            body["residency"] = residency

        def post():
            response = requests.post(f"{self.status()['router_url']}/api/v1/tasks", json=body,
                                     headers=self.headers(), timeout=15)
            return response.json()["task"]["url"] if response.status_code in (200, 201) else None

        return wait_for(post, 60, interval=0.5, what=f"the router to accept a {capability} task")

    def wait_succeeded(self, url: str, timeout: float = 60) -> dict:
        def done():
            task = requests.get(url, headers=self.headers(), timeout=10).json()
            return task if task["status"] in ("succeeded", "failed", "cancelled") else None

        task = wait_for(done, timeout, interval=0.3, what=f"task {url}")
        assert task["status"] == "succeeded", task
        return task

    def descendants(self) -> dict[int, str]:
        """Every process under the shell, by pid, with its command line."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry.name))
        found, todo = {}, [self.shell.pid]
        while todo:
            pid = todo.pop()
            for child in children.get(pid, []):
                found[child] = _cmdline(child)
                todo.append(child)
        return found

    def stop(self) -> None:
        pid = self.status().get("pid")
        if self.shell.poll() is None and pid:
            os.kill(pid, signal.SIGINT)
            try:
                self.shell.wait(90)
            except subprocess.TimeoutExpired:
                pass
        if self.shell.poll() is None:  # it did not stop: leave nothing behind anyway
            for proc in self.status().get("processes", {}).values():
                if proc["pid"]:
                    try:
                        os.killpg(proc["pid"], signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            os.kill(self.status()["pid"], signal.SIGKILL)
            self.shell.kill()
        drop_vhosts(self.prefix)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int, cmdline: str) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and _cmdline(pid) == cmdline


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    running = Demo(tmp_path_factory.mktemp("demo-bg"))
    try:
        wait_for(lambda: running.status().get("phase") == "running" or running.shell.poll() is not None, 240,
                 interval=0.5, what="the demo to be running")
        assert running.status().get("phase") == "running", running.text()[-3000:]
        yield running
    finally:
        running.stop()


@pytest.mark.faults
def test_soak_keeps_every_process_up_and_completes_every_task(demo):
    out = subprocess.run([sys.executable, "bench/soak.py", "--attach", str(demo.status_file), "--seconds", "30",
                          "--rate", "4", "--drain", "60"],
                         cwd=ROOT, env=demo_env(), capture_output=True, text=True, timeout=240)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH soak ")), "")
    assert out.returncode == 0 and line.endswith(" ok restarts=0 crashes=0"), out.stdout[-3000:] + out.stderr[-2000:]
    completed, submitted = int(line.split()[2]), int(line.split("ref=")[1].split()[0])
    record(f"FAULT demo soak 30s through the router: {line}")
    assert completed == submitted >= 100  # 4 a second for 30 s


def test_demo_runs_tasks_across_three_regions(demo):
    text = demo.text()
    assert f"broker: RabbitMQ on 127.0.0.1:5672, vhosts {demo.prefix}-us-east-1" in text
    assert "8 of 8 tasks completed" in text
    for region in REGIONS:
        assert f"{region}" in text and "/admin/" in text
    assert "records stored" in text and "gzip" in text
    assert "succeeded" in text.split("a workflow at eu-west-3", 1)[1].split("\n")[1]  # issue 18: one workflow
    assert "the join received 3 results" in text
    # Residency held: eu tasks ran in eu-west-3 only.
    eu_rows = [line for line in text.splitlines() if " data_ingestion " in line and " eu " in line]
    assert eu_rows and all(line.strip().startswith("eu-west-3") for line in eu_rows)
    # A demo of another prefix beside the default one shares no Redis with it (nor with the machine's).
    redis_urls = {layout.env_file_read(demo.root / "demo" / region / "env")["REDIS_URL"] for region in REGIONS}
    assert not any(url.startswith("redis://127.0.0.1:6379/") for url in redis_urls), redis_urls
    assert "redis" in demo.status()["processes"]


def test_killed_agent_and_orchestrator_are_restarted_and_work_resumes(demo):
    agent, orchestrator = demo.process("agent-us-files-1"), demo.process("us-east-1-orchestrator")
    os.kill(agent["pid"], signal.SIGKILL)
    os.kill(orchestrator["pid"], signal.SIGKILL)

    def restarted(name, old):
        proc = demo.process(name)
        return proc["state"] == "running" and proc["pid"] != old["pid"] and proc["restarts"] == old["restarts"] + 1

    wait_for(lambda: restarted("agent-us-files-1", agent) and restarted("us-east-1-orchestrator", orchestrator),
             30, interval=0.2, what="both to be restarted")
    text = demo.text()
    assert "agent-us-files-1 exited unexpectedly (killed by SIGKILL)" in text
    assert "us-east-1-orchestrator exited unexpectedly (killed by SIGKILL)" in text
    # file_processing in the us is served by the restarted agent only.
    url = demo.submit("file_processing", {"source": "archive.log", "hash": ["sha256"], "compress": "gzip"},
                      residency="us")
    task = demo.wait_succeeded(url)
    assert task["agent"] == "us-files-1"


def test_revoked_agent_stays_stopped_and_the_demo_keeps_running(demo):
    region_url = demo.status()["regions"]["eu-west-3"]
    response = requests.post(f"{region_url}/api/v1/agents/eu-ingest-2/revoke", headers=demo.headers(), timeout=10)
    assert response.status_code == 200, response.text
    wait_for(lambda: demo.process("agent-eu-ingest-2")["state"] == "stopped", 30, interval=0.2,
             what="the revoked agent to stop")
    assert "agent-eu-ingest-2 stopped on request (exit code 0); not restarted" in demo.text()
    # The rest keeps working: eu ingestion on the other eu agent.
    url = demo.submit("data_ingestion", {"source": "readings.csv",
                                         "schema": {"sensor": "str", "celsius": "float", "ok": "bool"}},
                      residency="eu")
    assert demo.wait_succeeded(url)["agent"] == "eu-ingest-1"
    proc = demo.process("agent-eu-ingest-2")
    assert proc["state"] == "stopped" and proc["restarts"] == 0
    assert demo.status()["phase"] == "running" and demo.shell.poll() is None


def test_the_printed_commands_start_your_own_agent_and_submit_with_the_cli(demo, tmp_path):
    """As a reader would: copy the two commands the demo printed into shells."""
    lines = demo.text().splitlines()
    agent_cmd = lines[next(i for i, x in enumerate(lines) if x.startswith("your own agent, from another shell")) + 1]
    at = next(i for i, x in enumerate(lines) if x.startswith("submit and wait with the CLI"))
    export_cmd, submit_cmd = lines[at + 1].strip(), lines[at + 2].strip()
    assert "--registration-token mrt_" in agent_cmd and export_cmd.startswith("export MERIDIAN_URL=")
    log = tmp_path / "my-agent.log"
    agent = subprocess.Popen(["bash", "-c", f"{agent_cmd.strip()} > {log} 2>&1"], env=demo_env(),
                             start_new_session=True)
    try:
        wait_for(lambda: log.exists() and "joined region eu-west-3 with handlers from acme_tasks.tasks" in
                 log.read_text() or agent.poll() is not None, 60, what="your agent to join")
        assert agent.poll() is None, log.read_text()[-2000:]
        out = subprocess.run(["bash", "-c", f"{export_cmd}; {submit_cmd}"], env=demo_env(), capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert '"unique_words"' in out.stdout and "waiting" in out.stderr, out.stdout + out.stderr
        out = subprocess.run(["bash", "-c", f"{export_cmd}; {submit_cmd} --json"], env=demo_env(),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and json.loads(out.stdout)["task"]["result"]["words"] == 10, out.stdout + out.stderr
    finally:
        os.killpg(agent.pid, signal.SIGTERM)
        agent.wait(60)
    # bash ends at once on SIGTERM; the agent it started stops warmly and says so before it exits.
    wait_for(lambda: "deregistered" in log.read_text() or not group_alive(agent.pid), 60, interval=0.2,
             what="your agent to stop")
    assert "deregistered" in log.read_text(), log.read_text()[-2000:]


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigint_stops_a_background_demo_and_every_process_it_started(demo):
    processes = demo.descendants()
    assert len(processes) > 12  # the demo, its children and their workers
    os.kill(demo.status()["pid"], signal.SIGINT)
    assert demo.shell.wait(90) == 0, demo.text()[-3000:]
    text = demo.text()
    # 3 × (web, 2 orchestrators), the router, 7 agents and (another prefix than the default) its redis-server
    assert "stopping…" in text and "stopped 18 processes" in text
    wait_for(lambda: not [pid for pid, cmd in processes.items() if _alive(pid, cmd)], 10,
             what="every process the demo started to be gone")
    # Agents first: they deregistered while their regions still answered.
    logs = demo.root / "demo" / "logs"
    assert "deregistered" in (logs / "agent-us-ingest-1.log").read_text()
    assert demo.status()["phase"] == "stopped"
