"""The fleet's layout: the regions and their agents, the ports, the
environment of every process and the command lines they run."""
from __future__ import annotations

import os
import secrets
import shlex
import socket
from pathlib import Path

from django.conf import settings

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


class DemoError(Exception):
    """The demo cannot go on; the command reports it and exits 1."""


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def ports_free(*, base: int, n: int) -> list[int]:
    """The first `n` ports from `base` up that nothing answers on."""
    ports, port = [], base
    while len(ports) < n:
        if _port_free(port):
            ports.append(port)
        port += 1
    return ports


def role_env(*, root: Path, name: str, **extra: str) -> dict:
    """The environment of one role (router or region): a SQLite database and a
    var directory of its own under `root`, static files shared."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "EXTRA_APPS")}
    env.update(DJANGO_SETTINGS_MODULE="project.settings", PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING",
               DATABASE_URL=f"sqlite:///{root / name / 'db.sqlite3'}", SECRET_KEY=secrets.token_urlsafe(32),
               ALLOWED_HOSTS="127.0.0.1,localhost", VAR_DIR=str(root / name / "var"),
               STATIC_ROOT=str(root / "static"), **extra)
    (root / name).mkdir(parents=True, exist_ok=True)
    env_file_write(root / name / ENV_FILE, env)
    return env


# What a command needs to read one role of the demo (`manage.py fleet_status --demo
# eu-west-3`, or `set -a; . var/demo/eu-west-3/env; set +a`): where its database and
# its liveness store are. No secret key, no token.
ENV_FILE = "env"
ENV_FILE_KEYS = ("DJANGO_SETTINGS_MODULE", "ROLE", "REGION_ID", "REGION_URL", "DATABASE_URL", "REDIS_URL",
                 "CELERY_BROKER_URL", "VAR_DIR", "ROUTER_URL")


def env_file_write(path: Path, env: dict) -> None:
    """KEY=value lines a shell can source, readable by their owner only."""
    text = "".join(f"{k}={shlex.quote(env[k])}\n" for k in ENV_FILE_KEYS if k in env)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def env_file_read(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ENV_FILE_KEYS:
            env[key] = "".join(shlex.split(value)) if value else ""
    return env


def region_env(*, root: Path, region_id: str, url: str, redis_url: str, broker_url: str, router_url: str,
               router_public_key: str, config_repo: Path) -> dict:
    """A region's environment, with short intervals so that the demo is lively. It
    trusts the router's key (forwarded callers, the agents it places here) and
    knows none of the router's registration tokens."""
    return role_env(root=root, name=region_id, ROLE="region", REGION_ID=region_id, REGION_URL=url,
                    REDIS_URL=redis_url, CELERY_BROKER_URL=broker_url,
                    AGENT_DATA_ROOT=str(root / region_id / "data"), ROUTER_URL=router_url,
                    SUMMARY_INTERVAL="3", HEARTBEAT_INTERVAL="2", AGENT_TASK_EVENTS="1",  # docs/flower.md
                    HEARTBEAT_TTL="6", REAPER_INTERVAL="2", LIVENESS_FLUSH_INTERVAL="2",
                    SWEEPER_INTERVAL="1", ROUTER_PUBLIC_KEYS=router_public_key,
                    CONFIG_REPO=str(config_repo), CONFIG_REF="main", CONFIG_SYNC_INTERVAL="10")


def web_args(*, port: int | str) -> list[str]:
    return ["-m", "gunicorn", "-c", str(Path(settings.BASE_DIR) / "project" / "gunicorn_conf.py"), "-w", "2",
            "-b", f"127.0.0.1:{port}"]


def orchestrator_args() -> list[str]:
    return ["manage.py", "run_region_worker", "--beat", "--concurrency", "2"]


def agent_args(*, agent_id: str, capabilities: str | None, handlers: str | None, router_url: str,
               region_id: str) -> list[str]:
    # Discovery through the router, like the article's agents.
    return ["manage.py", "run_agent", *(["--capabilities", capabilities] if capabilities else []),
            *(["--handlers", handlers] if handlers else []), "--agent-id", agent_id, "--router-url", router_url,
            "--region", region_id, "--concurrency", "2", "--loglevel", "WARNING"]


def agent_env(*, env: dict, handlers: str | None, registration_token: str) -> dict:
    """An agent's: its region's, and the router's registration token (the router
    hands it a grant for that region)."""
    return {**env, "AGENT_REGISTRATION_TOKEN": registration_token,
            **({"PYTHONPATH": str(ACME)} if handlers else {})}
