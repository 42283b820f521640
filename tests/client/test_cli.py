"""The `meridian` CLI as a shell script uses it: a real process against the real
router and region, its output and its exit codes (0 ok, 1 failed, 2 usage,
3 timed out, 4 cancelled, 5 refused, 6 unavailable)."""
from __future__ import annotations

import json
import uuid

import pytest

from tests.harness import free_port

pytestmark = pytest.mark.integration

NOBODY = "nobody_serves_this"


def test_submit_and_wait_prints_the_result_and_exits_0(meridian, tmp_path):
    payload = tmp_path / "payload.json"
    payload.write_text('{"from": "file"}')
    done = meridian("submit", "echo", "--payload", f"@{payload}", "--residency", "eu", "--wait",
                    "--wait-timeout", "90")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["echo"] == {"from": "file"}


def test_submit_prints_a_reference_that_status_result_and_json_take(meridian):
    sub = meridian("submit", "echo", "--payload", '{"n": 5}', "--residency", "eu")
    assert sub.returncode == 0, sub.stderr
    ref = sub.stdout.split()[0]
    assert ref.startswith("eu-west-3/")
    result = meridian("result", ref, "--timeout", "90")
    assert result.returncode == 0 and json.loads(result.stdout)["echo"] == {"n": 5}, result.stderr
    status = meridian("status", ref, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "succeeded"
    human = meridian("status", ref)
    assert f"{ref}  succeeded  echo  attempt 1/" in human.stdout


def test_a_failed_task_exits_1_and_says_why(meridian):
    done = meridian("submit", "fail", "--payload", '{"message": "cli-boom", "permanent": true}', "--residency",
                    "eu", "--max-attempts", "1", "--wait", "--wait-timeout", "90")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "failed" in done.stderr and "cli-boom" in done.stderr


def test_waiting_past_the_timeout_exits_3_and_a_cancelled_task_exits_4(fleet, meridian):
    region = fleet.region.url
    sub = meridian("submit", NOBODY, "--json", url=region)
    ref = json.loads(sub.stdout)["ref"]
    assert ref.startswith("eu-west-3/"), sub.stdout
    late = meridian("result", ref, "--timeout", "1", url=region)
    assert late.returncode == 3 and "timed out" in late.stderr
    cancel = meridian("cancel", ref)  # through the router: redirected to the region
    assert cancel.returncode == 0 and "cancelled" in cancel.stdout, cancel.stderr
    assert meridian("result", ref).returncode == 4
    again = meridian("cancel", ref)
    assert again.returncode == 5 and "409" in again.stderr
    retried = meridian("retry", ref, "--json")
    assert retried.returncode == 0 and json.loads(retried.stdout)["status"] == "waiting"
    assert meridian("cancel", ref).returncode == 0


def test_wait_for_many_shows_progress_and_reports_each(meridian):
    refs = [meridian("submit", "echo", "--payload", json.dumps({"i": i}), "--residency", "eu").stdout.split()[0]
            for i in range(3)]
    done = meridian("wait", *refs, "--timeout", "90")
    assert done.returncode == 0, done.stderr
    assert "[..........] 0/3 done" in done.stderr and "[##########] 3/3 done" in done.stderr
    assert sorted(line.split()[0] for line in done.stdout.splitlines() if "succeeded" in line) == sorted(refs)
    as_json = meridian("wait", *refs, "--json")
    assert [t["task"]["status"] for t in json.loads(as_json.stdout)["tasks"]] == ["succeeded"] * 3


def test_route_lists_the_regions_best_first(meridian):
    human = meridian("route", "echo", "--residency", "eu")
    assert human.returncode == 0 and human.stdout.startswith("eu-west-3  idle ")
    assert json.loads(meridian("route", "echo", "--json").stdout)["capability"] == "echo"


def test_refusals_usage_errors_and_unreachable_servers_have_their_own_exit_codes(fleet, meridian):
    unknown = meridian("status", f"eu-west-3/{uuid.uuid4()}")
    assert unknown.returncode == 5 and "404" in unknown.stderr
    bad_key = meridian("status", f"eu-west-3/{uuid.uuid4()}", MERIDIAN_API_KEY="mk_wrong")
    assert bad_key.returncode == 5 and "401" in bad_key.stderr
    invalid = meridian("submit", "echo", "--payload", '{"n": 1}', "--priority", "99", "--residency", "eu")
    assert invalid.returncode == 5 and "priority" in invalid.stderr
    nobody = meridian("submit", NOBODY, "--require-agent", url=fleet.region.url)
    assert nobody.returncode == 5 and "no_agent" in nobody.stderr
    assert meridian("submit", "echo", "--payload", "not json").returncode == 2
    assert meridian("submit", "echo", "--payload", "@/nonexistent.json").returncode == 2
    assert meridian("status", "not-a-reference").returncode == 2
    assert meridian("frobnicate").returncode == 2
    down = meridian("status", f"eu-west-3/{uuid.uuid4()}", "--deadline", "1", url=f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 6 and "unavailable" in down.stderr
    assert "exit codes" in meridian("--help").stdout
