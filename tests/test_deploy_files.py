"""No Docker engine runs here, so the deployment files are checked statically:
they parse, and every command they run exists in the project."""
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _serves_the_project_web(argv: list[str]) -> bool:
    """gunicorn with the one server configuration (ASGI workers, read timeouts)."""
    return (argv[0].endswith("gunicorn") and argv[1:3] == ["-c", "project/gunicorn_conf.py"]
            and (ROOT / "project" / "gunicorn_conf.py").exists())


def _commands(command: str) -> list[list[str]]:
    if command.startswith("sh -c "):
        command = shlex.split(command)[2]
    return [shlex.split(part) for part in re.split(r"\s*&&\s*", command)]


def test_compose_has_a_router_and_three_regions_each_with_its_own_database_redis_and_broker(compose):
    services = compose["services"]
    assert "router" in services and "router-db" in services
    for region in ("us-east-1", "eu-west-3", "ap-southeast-1"):
        for suffix in ("", "-db", "-redis", "-broker", "-orchestrator", "-agent"):
            assert f"{region}{suffix}" in services
        env = services[region]["environment"]
        assert env["REGION_ID"] == region
        assert f"{region}-db" in env["DATABASE_URL"] and f"{region}-redis" in env["REDIS_URL"]
        # Agents get the broker only; the liveness Redis is the orchestrator's alone.
        assert env["CELERY_BROKER_URL"].startswith(f"amqp://") and f"@{region}-broker:" in env["CELERY_BROKER_URL"]
        assert services[f"{region}-broker"]["image"].startswith("rabbitmq:")
        agent_env = services[f"{region}-agent"]["environment"]
        assert not {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"} & set(agent_env)  # the broker comes at registration
        assert f"--region {region}" in services[f"{region}-agent"]["command"]


def test_every_compose_command_exists_in_the_project(compose):
    known = set(get_commands())
    checked = 0
    for name, service in compose["services"].items():
        if "command" not in service:
            continue
        for argv in _commands(service["command"]):
            if argv[:2] == ["python", "manage.py"]:
                assert argv[2] in known, f"{name}: manage.py {argv[2]} does not exist"
                checked += 1
            elif argv[0] == "gunicorn":
                assert _serves_the_project_web(argv), f"{name}: {argv}"
                checked += 1
            else:
                pytest.fail(f"{name}: unexpected command {argv}")
    assert checked >= 13


def test_dockerfile_installs_the_requirements_and_serves_the_web_with_the_project_server_config():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    assert "pip install --no-cache-dir -r requirements.txt" in text
    assert _serves_the_project_web(json.loads(re.search(r"^CMD (.*)$", text, re.M).group(1)))
    assert "USER meridian" in text


def test_every_long_running_compose_service_is_restarted_when_it_dies(compose):
    for name, service in compose["services"].items():
        expected = "on-failure" if name.endswith("-agent") else "unless-stopped"
        assert service.get("restart") == expected, name


def test_the_broker_lets_a_task_run_as_long_as_the_api_allows():
    conf = (ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text()
    timeout_ms = int(re.search(r"^consumer_timeout\s*=\s*(\d+)", conf, re.M).group(1))
    assert timeout_ms > 86_400 * 1000


def test_systemd_units_supervise_every_process_and_run_existing_commands():
    known = set(get_commands())
    units = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
    assert {u.name for u in units} >= {"meridian-region-web@.service", "meridian-orchestrator@.service",
                                       "meridian-agent@.service"}
    for unit in units:
        text = unit.read_text()
        assert re.search(r"^Restart=(always|on-failure)$", text, re.M), unit.name
        argv = shlex.split(re.search(r"^ExecStart=(.*)$", text, re.M).group(1))
        if "manage.py" in argv:
            assert argv[argv.index("manage.py") + 1] in known, unit.name
        else:
            assert _serves_the_project_web(argv), unit.name
    assert "RestartPreventExitStatus=78" in (ROOT / "deploy" / "systemd" / "meridian-agent@.service").read_text()


def test_the_server_config_serves_the_asgi_app_with_read_timeouts():
    from project import gunicorn_conf

    assert gunicorn_conf.wsgi_app == "project.asgi:application"
    assert gunicorn_conf.worker_class == "project.gunicorn_conf.MeridianWorker"
    assert 0 < gunicorn_conf.HEADER_TIMEOUT <= 60 and 0 < gunicorn_conf.BODY_TIMEOUT <= 60
