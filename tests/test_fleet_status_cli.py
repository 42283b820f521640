"""`manage.py fleet_status` from a shell: the "needs attention" panel first, an
exit status a monitor can branch on (0 nothing, 1 warnings, 2 critical, 3 the
state cannot be read), one clear line instead of a traceback when pointed at
nothing, and `--demo <name>` reading that role's database and Redis."""
import json
import os
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from regions.management.demo.layout import env_file_write
from regions.models import Agent
from regions.services import liveness

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, env: dict, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), "fleet_status", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _bare_env(tmp_path: Path) -> dict:
    """A shell with none of Meridian's settings: the defaults (SQLite under VAR_DIR, local Redis)."""
    keep = ("PATH", "HOME", "LANG", "PYTHONPATH")
    return {**{k: v for k, v in os.environ.items() if k in keep}, "VAR_DIR": str(tmp_path / "var")}


def test_run_bare_it_says_in_one_line_what_to_point_it_at_and_exits_3(tmp_path):
    out = _run(env=_bare_env(tmp_path))
    assert out.returncode == 3, out
    assert "Traceback" not in out.stderr
    error = [line for line in out.stderr.splitlines() if line.startswith("CommandError")]
    assert len(error) == 1 and "cannot read the region local-1's state" in error[0]
    assert "--demo eu-west-3" in error[0] and "DATABASE_URL" in error[0]


def test_any_other_failure_exits_3_not_1_which_means_warnings(tmp_path):
    """A monitor branches on the status: a crash must not read as "warnings only"."""
    out = _run(env={**_bare_env(tmp_path), "REDIS_URL": "foo://not-redis"})
    assert out.returncode == 3, out
    assert "Traceback" not in out.stderr and "the state could not be read: ValueError" in out.stderr
    out = _run("--traceback", env={**_bare_env(tmp_path), "REDIS_URL": "foo://not-redis"})
    assert out.returncode == 1 and "Traceback" in out.stderr


def test_demo_without_its_environment_file_is_a_clear_error(tmp_path):
    out = _run("--demo", "eu-west-3", "--demo-dir", str(tmp_path), env=_bare_env(tmp_path))
    assert out.returncode == 3 and "Traceback" not in out.stderr
    assert f"no demo environment at {tmp_path / 'eu-west-3' / 'env'}" in out.stderr


@pytest.mark.django_db
def test_demo_region_is_read_from_its_own_database_and_redis_with_exit_codes(tmp_path, redis_clean):
    """The environment file `make demo` writes (layout.role_env) names the
    region's database and Redis; the shell's own point elsewhere."""
    db = connection.settings_dict
    url = f"postgres://{db['USER']}{':' + db['PASSWORD'] if db['PASSWORD'] else ''}@{db['HOST'] or '127.0.0.1'}" \
          f":{db['PORT'] or 5432}/{db['NAME']}"
    (tmp_path / "eu-west-3").mkdir()
    env_file_write(tmp_path / "eu-west-3" / "env", {
        "DJANGO_SETTINGS_MODULE": "project.settings", "ROLE": "region", "REGION_ID": os.environ["REGION_ID"],
        "DATABASE_URL": url, "REDIS_URL": os.environ["REDIS_URL"], "VAR_DIR": str(tmp_path / "var")})
    shell = {**_bare_env(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0"}  # the wrong Redis: must not be read

    def run() -> subprocess.CompletedProcess:
        return _run("--demo", "eu-west-3", "--demo-dir", str(tmp_path), env=shell)

    # Committed data only is seen by another process: no agent rows; liveness from Redis.
    out = run()
    assert out.returncode == 2, out.stderr
    assert out.stdout.startswith("Needs attention (1)\n  CRITICAL  no live agent in this region")
    liveness.client().zadd(liveness.key("live"), {"a1": time.time()})
    out = run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("Needs attention (0)\n  Nothing needs attention.")
    liveness.hold_set({"mode": "hold", "reason": "4 of 7 agents silent"})
    out = run()
    assert out.returncode == 1, out.stdout
    assert "WARNING   eviction hold in force" in out.stdout
    out = _run("--demo", "eu-west-3", "--demo-dir", str(tmp_path), "--json", env=shell)
    assert out.returncode == 1 and [i["kind"] for i in json.loads(out.stdout)["attention"]] == ["eviction_hold"]


@pytest.mark.django_db
def test_panel_is_printed_first_and_json_carries_the_items(redis_clean):
    Agent.objects.create(agent_id="a1", capabilities=["echo"], token_hash="x" * 64)
    out = StringIO()
    call_command("fleet_status", stdout=out)
    text = out.getvalue()
    assert text.startswith("Needs attention (1)\n  CRITICAL  no live agent in this region: no task can run  "
                           "</admin/regions/agent/?status__exact=online>\n")
    assert text.index("Needs attention") < text.index("Region ")
    out = StringIO()
    call_command("fleet_status", "--json", stdout=out)
    assert [i["kind"] for i in json.loads(out.getvalue())["attention"]] == ["no_agents"]


def test_the_demo_writes_each_roles_environment_without_secrets(tmp_path):
    from regions.management.demo import layout

    env = layout.region_env(root=tmp_path, region_id="eu-west-3", url="http://127.0.0.1:8002",
                            redis_url="redis://127.0.0.1:6379/2", broker_url="amqp://guest:guest@127.0.0.1/v",
                            router_url="http://127.0.0.1:8000", router_public_key="pk", config_repo=tmp_path)
    path = tmp_path / "eu-west-3" / "env"
    assert (path.stat().st_mode & 0o777) == 0o600
    read = layout.env_file_read(path)
    assert read["REDIS_URL"] == "redis://127.0.0.1:6379/2" and read["DATABASE_URL"] == env["DATABASE_URL"]
    assert read["REGION_ID"] == "eu-west-3" and "SECRET_KEY" not in path.read_text()
