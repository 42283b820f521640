"""The README's run command works: the demo starts a router and three regions,
runs tasks through the router on real agents, and stops cleanly."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ROOT, free_port

pytestmark = pytest.mark.integration


def test_demo_runs_tasks_across_three_regions_and_stops_cleanly(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "EXTRA_APPS", "REDIS_URL", "CELERY_BROKER_URL", "REGION_ID")}
    env["DJANGO_SETTINGS_MODULE"] = "project.settings"
    out = subprocess.run(
        [sys.executable, "manage.py", "demo", "--exit-after-tasks", "--tasks", "8",
         "--base-port", str(free_port()), "--dir", str(tmp_path / "demo")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "8 of 8 tasks completed" in text
    for region in ("us-east-1", "eu-west-3", "ap-southeast-1"):
        assert f"{region}" in text and "/admin/" in text
    assert "records stored" in text and "gzip" in text
    # Residency held: eu tasks ran in eu-west-3 only.
    eu_rows = [line for line in text.splitlines() if " data_ingestion " in line and " eu " in line]
    assert eu_rows and all(line.strip().startswith("eu-west-3") for line in eu_rows)
    logs = Path(tmp_path / "demo" / "logs")
    assert "deregistered" in "".join(p.read_text() for p in logs.glob("agent-*.log"))
