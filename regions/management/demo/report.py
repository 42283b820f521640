"""What the demo prints about the running fleet: the regions as the router
sees them, and how to reach everything (consoles, API key, your own agent,
the CLI)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from django.conf import settings

from regions.management.demo.layout import ACME, ACME_HANDLERS
from regions.management.demo.traffic import auth_headers, get_ok


def regions_show(*, router_url: str, api_key: str, say: Callable[[str], None]) -> None:
    regions = get_ok(f"{router_url}/api/v1/regions", headers=auth_headers(api_key)).json()["regions"]
    say("\nregions at the router:")
    for r in regions:
        caps = ", ".join(f"{c} {v['idle']}/{v['count']} idle" for c, v in sorted(r["capabilities"].items()))
        say(f"  {r['region_id']:15} labels={','.join(r['labels']):8} agents={r['available_agents']}  {caps}")


def access_show(*, router_url: str, region_urls: dict[str, str], api_key: str, password: str,
                registration_token: str, say: Callable[[str], None]) -> None:
    say("\nadmin consoles (user admin, password " + password + "):")
    say(f"  router          {router_url}/admin/")
    for region_id, url in region_urls.items():
        say(f"  {region_id:15} {url}/admin/")
    say(f"API key for every role: {api_key}")
    say(f"  curl -H 'Authorization: Bearer {api_key}' '{router_url}/api/v1/route?capability=data_ingestion'")
    base, python = Path(settings.BASE_DIR), Path(sys.executable)
    say("\nyour own agent, from another shell (its handlers: examples/acme-tasks/acme_tasks/tasks.py):")
    say(f"  cd {base} && PYTHONPATH={ACME} {python} manage.py run_agent --handlers {ACME_HANDLERS} "
        f"--router-url {router_url} --region eu-west-3 --registration-token {registration_token} "
        "--agent-id my-agent-1")
    say("submit and wait with the CLI (pip install ./client gives `meridian`; --json for scripts):")
    say(f"  export MERIDIAN_URL={router_url} MERIDIAN_API_KEY={api_key}")
    say(f"  {python.parent / 'meridian'} submit text_stats --residency eu --payload "
        "'{\"text\": \"Meridian runs your code. Your code runs near its data.\"}' --wait")
