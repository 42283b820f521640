"""The fleet console in a real browser: Debian's Chromium (bin/ensure-browser),
headless, driven by Playwright, against a real region (web, orchestrator, two
agents) and the Global Task Router. It logs in to both, checks the admin's
stylesheet is applied (computed style, not a 200), opens the overview and the
lists, drains an agent from the admin and watches it drain, and saves screenshots.

Screenshots go to a temporary directory; to refresh the ones in docs/operations.md:
    MERIDIAN_SCREENSHOTS=docs/screenshots .venv/bin/python -m pytest tests/test_browser.py
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import harness
from tests.harness import ROOT, wait_for

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
# Debian's build as root needs --no-sandbox; without the background-networking
# switches Chromium keeps trying to reach Google, which a closed network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
USERNAME, PASSWORD = "admin", "console-test-password-7f3a"
DRAINED, STEADY = "console-agent-drain", "console-agent-steady"
LIVE_SECONDS = 2  # the overview's refresh here (OVERVIEW_REFRESH_SECONDS; 10 s by default)
SLEEP_SECONDS = 6  # the drained agent's last task: long enough to be seen draining
FINDER = "/admin/router/region/find-task/"


def _superuser(node: harness.Region) -> None:
    subprocess.run([sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", USERNAME,
                    "--email", "admin@example.com"], cwd=ROOT, check=True, capture_output=True,
                   env={**node.env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD})


def _config_commits(path: Path) -> list[tuple[str, str]]:
    """A configuration repository with two commits: [(sha, subject), ...], oldest first."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=ops", "-c", "user.email=ops@example.com", *args],
                              cwd=path, check=True, capture_output=True, text=True).stdout.strip()

    path.mkdir()
    git("init", "-q", "-b", "main")
    commits = []
    for timeout, subject in ((60, "Ingestion: 60 s timeout"), (120, "Ingestion: timeout 120 s for the big feeds")):
        (path / "global.yaml").write_text(f"schema_version: 1\ntasks:\n  data_ingestion:\n    timeout: {timeout}\n")
        git("add", "global.yaml")
        git("commit", "-q", "-m", subject)
        commits.append((git("rev-parse", "HEAD"), subject))
    return commits


def _report_from_afar(router: harness.Router, region_id: str, labels: str, commit: tuple[str, str],
                      capabilities: dict) -> None:
    """A region at the router that exists only as its summaries: the router's
    pages show more than one region, on more than one configuration commit."""
    far = harness.Region.__new__(harness.Region)
    far.region_id, far.url, far.env = region_id, f"https://orchestrator-{region_id}.example.com", {}
    token = router.add_region(far, labels=labels, interval=60)
    r = router.session.post(f"{router.url}/update_regional_status", timeout=10, headers={
        "Authorization": f"Bearer {token}"}, json={
        "region_id": region_id, "orchestrator_url": far.url, "last_updated": time.time(),
        "available_agents": sum(c["count"] for c in capabilities.values()),
        "agent_capabilities_summary": capabilities, "config_version": commit[0], "config_subject": commit[1],
        "summary_interval": 60})
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def fleet(region_template, router_template, tmp_path_factory):
    """A router and one region reporting to it (two more known by their summaries
    only, one on an older configuration commit), two agents, a superuser in each,
    and tasks in every state a console shows: succeeded, retried, failed, waiting.
    The router and the region start side by side."""
    nodes = []
    try:
        router = harness.Router(router_template)
        nodes.append(router)
        # Overviews refresh every 2 s here (10 s by default): the live tests wait on refreshes.
        region = harness.Region(region_template, region_id="eu-west-3", OVERVIEW_REFRESH_SECONDS=LIVE_SECONDS)
        nodes.append(region)
        router.add_region(region, labels="eu,gdpr")
        repo = tmp_path_factory.mktemp("config") / "repo"
        older, newer = _config_commits(repo)

        def start_router():
            router.start()
            _superuser(router)
            _report_from_afar(router, "us-east-1", "us", older,
                              {"echo": {"count": 8, "idle": 5}, "data_ingestion": {"count": 4, "idle": 1}})
            _report_from_afar(router, "ap-southeast-1", "apac", newer, {"file_processing": {"count": 3, "idle": 3}})

        def start_region():
            region.manage("sync_config", "--repo", str(repo), "--ref", newer[0])
            region.start()
            region.agents = {agent_id: region.agent(caps, agent_id=agent_id, wait=False)
                             for agent_id, caps in ((DRAINED, "echo,fail,sleep"), (STEADY, "echo,fail"))}
            _superuser(region)
            for proc in region.agents.values():
                wait_for(lambda: "ready." in proc.log.read_text(errors="replace") or not proc.alive(), 40,
                         what=f"agent {proc.agent_id} ready")
                assert proc.alive(), proc.tail()

        with ThreadPoolExecutor(2) as pool:
            for started in [pool.submit(start_router), pool.submit(start_region)]:
                started.result()
        tasks = [region.submit("echo", {"n": n}) for n in range(6)]
        tasks.append(region.submit("fail", {"until_attempt": 2}, max_attempts=3))
        tasks.append(region.submit("fail", {"permanent": True, "message": "bad input"}, max_attempts=1))
        region.submit("file_processing", {"path": "in/report.csv"})  # no agent serves it: waiting
        for task in tasks:
            region.wait_task(task["id"], statuses=("succeeded", "failed"))
        wait_for(lambda: router.regions().get(region.region_id, {}).get("capabilities"), 20,
                 what="the region's first summary at the router")
        yield router, region
    finally:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda node: node.stop(), nodes))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} missing: run bin/ensure-browser"
    with sync_playwright() as p:
        # Playwright gives each launch a fresh, temporary user-data-dir.
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    target = os.environ.get("MERIDIAN_SCREENSHOTS")
    path = (ROOT / target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Console:
    """One logged-in browser tab on one node's admin."""

    def __init__(self, browser, node: harness.Region, shots: Path):
        self.node, self.shots = node, shots
        self.context = browser.new_context(viewport={"width": 1600, "height": 900}, base_url=node.url)
        self.context.set_default_timeout(15_000)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.static: dict[str, int] = {}
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("response", lambda r: "/static/" in r.url and self.static.__setitem__(r.url, r.status))

    def login(self) -> None:
        self.page.goto("/admin/login/?next=/admin/")
        self.page.fill("#id_username", USERNAME)
        self.page.fill("#id_password", PASSWORD)
        with self.page.expect_navigation():
            self.page.click("input[type=submit], button[type=submit]")
        assert self.page.url.rstrip("/").endswith("/admin"), (self.page.url, self._text()[:500])
        assert self.page.locator("#user-tools").count() == 1, self._text()[:500]

    def open(self, path: str) -> None:
        response = self.page.goto(path)
        assert response.status == 200, (path, response.status, self._text()[:500])
        self.page.wait_for_load_state("load")

    def assert_styled(self) -> None:
        """The admin's stylesheet is applied: computed styles that only base.css
        gives (a browser's defaults are an 8px body margin, a transparent
        header and a serif font), and the sheet's rules are really parsed."""
        style = self.page.evaluate("""() => {
            const body = getComputedStyle(document.body);
            const header = document.querySelector('#header');
            const sheets = [...document.styleSheets].filter(s => s.href && /admin\\/css\\/base/.test(s.href));
            let rules = 0;
            for (const s of sheets) { try { rules += s.cssRules.length } catch (e) {} }
            return {margin: body.marginTop, font: body.fontFamily,
                    header: header && getComputedStyle(header).backgroundColor,
                    sheets: sheets.map(s => s.href), rules};
        }""")
        failed = {url: status for url, status in self.static.items() if status >= 400}
        detail = f"{style}; static responses: {self.static}"
        assert not failed, detail
        assert style["sheets"] and style["rules"] > 50, detail
        assert style["margin"] == "0px", detail
        assert style["header"] not in (None, "rgba(0, 0, 0, 0)", "transparent"), detail
        assert not re.match(r'^"?(Times|serif)', style["font"]), detail

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def row(self, text: str):
        return self.page.locator("#result_list tbody tr", has_text=text)

    def row_text(self, text: str) -> str:
        row = self.row(text)
        return row.first.inner_text().lower() if row.count() else ""

    def _text(self) -> str:
        try:
            return self.page.inner_text("body")
        except Exception:
            return ""

    def close(self) -> None:
        self.context.close()
        assert not self.errors, f"JavaScript errors on {self.node.region_id}'s admin: {self.errors}"


@pytest.fixture
def console(browser, shots):
    opened = []

    def open_console(node) -> Console:
        c = Console(browser, node, shots)
        opened.append(c)
        c.login()
        return c

    yield open_console
    for c in opened:
        c.close()


def test_region_console_logs_in_styled_and_shows_overview_and_tasks(fleet, console):
    router, region = fleet
    c = console(region)
    c.assert_styled()
    c.open("/admin/")
    c.assert_styled()
    body = c.page.inner_text("#content").lower()
    assert region.region_id in c.page.inner_text("#header"), c.page.inner_text("#header")
    assert "overview" in body and "agents" in body and "online" in body, body[:1000]
    assert c.page.locator("#content svg").count(), "no chart on the overview"

    # Needs attention: the file_processing task no agent serves, a link to the list that shows it.
    attention = c.page.locator("#ov-attention")
    assert attention.count() == 1, body[:1000]
    line = attention.locator("li[data-kind=no_live_agent]", has_text="file_processing")
    assert line.count() == 1 and "critical" in line.inner_text(), attention.inner_text()
    with c.page.expect_navigation():
        line.locator("a").click()
    listed = c.page.inner_text("#result_list").lower()
    assert "file_processing" in listed and "waiting" in listed and "succeeded" not in listed, listed[:2000]

    c.open("/admin/regions/task/")
    c.assert_styled()
    rows = c.page.locator("#result_list tbody tr")
    assert rows.count() >= 9, c.page.inner_text("#content")[:2000]
    listed = c.page.inner_text("#result_list").lower()
    for status in ("succeeded", "failed", "waiting"):
        assert status in listed, listed[:2000]
    c.screenshot("region-tasks")


def test_draining_an_agent_from_the_admin_finishes_its_task_and_stops_it(fleet, console):
    router, region = fleet
    c = console(region)
    c.open("/admin/regions/agent/")
    c.assert_styled()
    assert "online" in c.row_text(DRAINED) and "online" in c.row_text(STEADY), c.page.inner_text("#content")

    # Its last task runs while it drains: drained agents finish their work first.
    last = region.submit("sleep", {"seconds": SLEEP_SECONDS})
    region.wait_task(last["id"], statuses=("running",), timeout=20)

    c.row(DRAINED).locator("input.action-select").check()
    action = c.page.evaluate("""() => {
        const option = [...document.querySelectorAll('select[name=action] option')]
            .find(o => /\\bdrain/i.test(o.textContent) || /(^|_)drain/i.test(o.value));
        return option && option.value;
    }""")
    assert action, c.page.inner_html("select[name=action]")
    c.page.select_option("select[name=action]", action)
    with c.page.expect_navigation():
        c.page.click("#changelist-form button[name=index], #changelist-form [type=submit][name=index]")
    # Drain asks first, saying what will happen from the agent's state now.
    assert f"agent {DRAINED} is running 1 task; drain lets them finish" in c.page.inner_text("#content"), \
        c.page.inner_text("#content")[:1000]
    found = _check_page(c.page, "region drain confirmation")
    assert not found, "\n".join(found)
    with c.page.expect_navigation():
        c.page.click("form:has(input[name=post]) [type=submit]")
    c.page.wait_for_load_state("load")
    assert c.page.locator(".messagelist").count(), c.page.inner_text("#content")[:1000]

    def shows(word: str):
        def check():
            c.open("/admin/regions/agent/")
            return word in c.row_text(DRAINED) and c.row_text(DRAINED)
        return check

    wait_for(shows("draining"), 10, interval=0.3, what=f"{DRAINED} shown draining")
    assert "online" in c.row_text(STEADY), c.row_text(STEADY)
    c.screenshot("region-agents")
    # The overview counts it among the draining while its last task runs.
    c.open("/admin/")
    states = c.page.inner_text("#content")
    if region.task(last["id"])["status"] == "running":
        assert re.search(r"draining\s+1\b", states), states[:1500]
    c.screenshot("region-overview")

    # The task it was running finishes; then it deregisters and its process exits.
    assert region.wait_task(last["id"], timeout=SLEEP_SECONDS + 15)["agent"] == DRAINED
    wait_for(shows("stopped"), 20, interval=0.5, what=f"{DRAINED} shown stopped")
    wait_for(lambda: not region.agents[DRAINED].alive(), 15, what=f"{DRAINED} process exits")
    assert "online" in c.row_text(STEADY), c.row_text(STEADY)


def test_router_console_logs_in_styled_and_shows_the_region(fleet, console):
    router, region = fleet
    c = console(router)
    c.assert_styled()
    c.open("/admin/")
    c.assert_styled()
    body = c.page.inner_text("#content")
    assert all(r in body for r in (region.region_id, "us-east-1", "ap-southeast-1")), body[:2000]
    # Every region's attention panel in one list: the region's own item, prefixed
    # with it and linked to its console; and the stale region.
    # (the region's next summary carries it: the page updates itself until it shows)
    c.page.wait_for_function("(t) => document.querySelector('#ov-attention').innerText.includes(t)",
                             arg=f"{region.region_id}: capability file_processing", timeout=30_000)
    attention = c.page.inner_text("#ov-attention")
    assert "region us-east-1 runs configuration" in attention, attention  # the drift, beside it
    c.screenshot("router-overview")

    c.open("/admin/router/region/")
    c.assert_styled()
    row = c.row_text(region.region_id)
    assert row and "fresh" in row, c.page.inner_text("#content")[:2000]
    assert c.row_text("us-east-1") and c.row_text("ap-southeast-1"), c.page.inner_text("#content")[:2000]
    c.screenshot("router-regions")

    # The drift page: regions grouped by the configuration commit they run.
    links = c.page.locator("a[href*='drift']")
    if links.count():
        with c.page.expect_navigation():
            links.first.click()
        c.assert_styled()
        drift = c.page.inner_text("#content")
        assert region.region_id in drift and "us-east-1" in drift, drift[:2000]
        assert "Ingestion: 60 s timeout" in drift and "timeout 120 s for the big feeds" in drift, drift[:2000]
        assert "majority" in drift, drift[:2000]  # eu-west-3 and ap-southeast-1 on the newer commit
        c.screenshot("router-drift")


# --- accessibility: axe-core on every console page of both roles ---------------------

AXE = ROOT / "tests" / "vendor" / "axe.min.js"  # axe-core 4.14.1 from npm, MPL-2.0 (tests/vendor/README.md)
AXE_VERSION = "4.14.1"
AXE_FAILING_IMPACTS = ("critical", "serious")
AXE_RUN = """async (only) => {
    const options = {resultTypes: ['violations']};
    if (only) options.runOnly = {type: 'rule', values: only};
    const r = await axe.run(document, options);
    return {version: axe.version, violations: r.violations.map(v => ({
        id: v.id, impact: v.impact, help: v.help, url: v.helpUrl,
        nodes: v.nodes.map(n => ({target: n.target.join(' '), html: n.html.slice(0, 200),
                                  summary: (n.failureSummary || '').replace(/\\s+/g, ' ')}))}))};
}"""


def axe_violations(page, where: str, only: list[str] | None = None) -> list[str]:
    """The critical and serious violations axe finds on the page as it is, one
    line each: page, rule id and impact, what it asks, the element, why."""
    if not page.evaluate("() => typeof axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate(AXE_RUN, only)
    assert result["version"] == AXE_VERSION, result["version"]
    found = []
    for v in result["violations"]:
        if v["impact"] not in AXE_FAILING_IMPACTS:
            continue
        for node in v["nodes"][:6]:
            found.append(f"{where}: {v['id']} ({v['impact']}): {v['help']}\n"
                         f"      at {node['target']}: {node['html']}\n      {node['summary']}")
        if len(v["nodes"]) > 6:
            found.append(f"{where}: {v['id']}: and {len(v['nodes']) - 6} more elements")
    return found


def _check_page(page, where: str) -> list[str]:
    """Light theme, every rule; then the dark theme's colours (the admin follows the system's)."""
    page.emulate_media(color_scheme="light")
    found = axe_violations(page, f"{where} [light]")
    # Colours as they settle: the admin's links fade between themes (a 0.15 s transition).
    page.add_style_tag(content="*, *::before, *::after { transition: none !important; animation: none !important; }")
    page.emulate_media(color_scheme="dark")
    found += axe_violations(page, f"{where} [dark]", only=["color-contrast", "link-in-text-block"])
    page.emulate_media(color_scheme="light")
    return found


def _console_pages(c: Console) -> list[str]:
    """The overview, each model's change list, one change form per model with a row."""
    c.open("/admin/")
    lists = c.page.eval_on_selector_all("#content-main tr[class^='model-'] th a",
                                        "links => links.map(a => a.getAttribute('href'))")
    assert len(lists) >= 3, c.page.inner_html("#content-main")[:2000]
    pages = ["/admin/"]
    for path in lists:
        pages.append(path)
        c.open(path)
        first = c.page.locator("#result_list tbody tr").first.locator("th a, td a").first
        if c.page.locator("#result_list tbody tr").count() and first.count():
            pages.append(first.get_attribute("href"))
        for extra in c.page.eval_on_selector_all("#content a[href*='drift']", "ls => ls.map(a => a.getAttribute('href'))"):
            pages.append(extra)
    return list(dict.fromkeys(pages))


@pytest.mark.parametrize("role", ["region", "router"])
def test_every_console_page_has_no_serious_accessibility_violation(fleet, console, browser, role):
    """axe-core on the landing page, the login page, the overview and each model's
    list and change form: none of impact critical or serious, in the light theme
    and (colours) in the dark one. Was: meta-refresh, color-contrast ×15, svg-img-alt,
    link-name, empty table headers."""
    router, region = fleet
    node = region if role == "region" else router
    found: list[str] = []
    anonymous = browser.new_context(viewport={"width": 1600, "height": 900}, base_url=node.url)
    try:
        page = anonymous.new_page()
        for path in ("/", "/admin/login/"):
            assert page.goto(path).status == 200, path
            found += _check_page(page, f"{role} {path}")
    finally:
        anonymous.close()
    c = console(node)
    pages = _console_pages(c)
    if role == "router":  # the task finder, empty and with an answer
        pages += [FINDER, f"{FINDER}?task_id={uuid.uuid4()}"]
    for path in pages:
        c.open(path)
        found += _check_page(c.page, f"{role} {path}")
    if role == "router":  # a token shown once, on the page that answers its form
        c.open("/admin/router/registrationtoken/add/")
        c.page.fill("input[name=name]", f"axe-{uuid.uuid4().hex[:6]}")
        with c.page.expect_navigation():
            c.page.click("input[name=_save]")
        assert "shown only on this page" in c.page.inner_text("#content"), c.page.inner_text("#content")[:1000]
        found += _check_page(c.page, "router token shown once")
        pages.append("token shown once")
    record_line = f"axe on {len(pages) + 2} pages of the {role}: {len(found)} critical/serious findings"
    print(record_line)
    assert not found, record_line + "\n" + "\n".join(found)


# --- 390 px: the overview on a phone ------------------------------------------------

NARROW = {"width": 390, "height": 844}
MEASURE_NARROW = """() => {
    const texts = [...document.querySelectorAll('#fleet-overview svg.chart text')].map(t => {
        const m = t.getScreenCTM();
        const size = parseFloat(getComputedStyle(t).fontSize) * Math.hypot(m.a, m.b);
        return {text: t.textContent, size: Math.round(size * 10) / 10};
    });
    const badges = [...document.querySelectorAll('.ov-badge, .meridian-badge')].map(b => {
        const r = b.getBoundingClientRect();
        return {text: b.textContent, height: r.height, font: parseFloat(getComputedStyle(b).fontSize)};
    });
    return {texts, badges};
}"""


@pytest.mark.parametrize("role", ["region", "router"])
def test_overview_at_390_px_keeps_chart_text_legible_and_badges_on_one_line(fleet, console, role):
    """Was: chart text shrunk to about 3 px, router badges wrapped letter by letter."""
    router, region = fleet
    c = console(region if role == "region" else router)
    c.page.set_viewport_size(NARROW)
    paths = ["/admin/"] + (["/admin/router/region/"] if role == "router" else ["/admin/regions/agent/"])
    for path in paths:
        c.open(path)
        measured = c.page.evaluate(MEASURE_NARROW)
        small = [t for t in measured["texts"] if t["size"] < 9]
        tall = [b for b in measured["badges"] if b["height"] > 2 * b["font"]]
        assert not small, (path, small[:10])
        assert not tall, (path, tall[:10])
        if path == "/admin/":
            assert measured["texts"] if role == "region" else True, "no chart text measured"
            assert measured["badges"], "no badge measured"
        if path == "/admin/" and role == "region":
            # The charts over time scroll sideways, each in its own box, and open on
            # their latest minutes, at the right.
            c.page.wait_for_function("""() => {
                const boxes = [...document.querySelectorAll('#fleet-overview .ov-chart')];
                return boxes.length >= 3 && boxes.every(box => box.scrollWidth > box.clientWidth
                                                        && box.scrollLeft + box.clientWidth >= box.scrollWidth - 1); }""",
                                     timeout=5_000)
    if role == "region":
        c.open("/admin/")
        c.screenshot("region-overview-390px")


# --- live pages: in place, keeping focus and open sections; Pause ------------------------

def _number(c: Console, selector: str) -> str:
    return c.page.inner_text(selector)


def test_overview_updates_in_place_keeping_focus_and_open_sections_and_pause_stops_it(fleet, console):
    router, region = fleet
    c = console(region)
    c.open("/admin/")
    c.page.evaluate("() => { localStorage.removeItem('meridian.live.paused'); }")
    c.open("/admin/")
    bar = c.page.locator(".live-bar")
    assert bar.count() == 1 and "Updated" in bar.inner_text(), c.page.inner_html("#content")[:1500]
    pause = bar.locator("button.live-pause")
    assert pause.get_attribute("aria-pressed") == "false"
    assert c.page.locator(".live-status").get_attribute("aria-live") == "polite"
    # "Updated N s ago" ticks.
    c.page.wait_for_function("() => /Updated [1-9]\\d* s ago/.test(document.querySelector('.live-age').textContent)",
                             timeout=5_000)

    heading = "#ov-throughput h2"
    before = _number(c, heading)
    summary = c.page.locator("#ov-wait details summary")
    assert summary.count() == 1, c.page.inner_html("#ov-wait")
    summary.click()  # opens it and holds the focus
    assert c.page.evaluate("() => document.querySelector('#ov-wait details').open")
    c.page.evaluate("() => { window.__marker = 'same page'; }")

    task = region.submit("echo", {"live": 1})
    region.wait_task(task["id"])
    c.page.wait_for_function("([sel, before]) => document.querySelector(sel).innerText !== before",
                             arg=[heading, before], timeout=30_000)
    state = c.page.evaluate("""() => ({marker: window.__marker,
        focused: document.activeElement && document.activeElement.tagName,
        focusedIn: document.activeElement && document.activeElement.closest('[id]') && document.activeElement.closest('[id]').id,
        open: document.querySelector('#ov-wait details').open})""")
    assert state == {"marker": "same page", "focused": "SUMMARY", "focusedIn": "ov-wait", "open": True}, state

    # A failed fetch keeps the page and says so; the next one recovers.
    c.page.route("**/admin/", lambda route: route.abort())
    c.page.wait_for_function("() => /Update failed, retrying/.test(document.querySelector('.live-status').textContent)",
                             timeout=30_000)
    assert c.page.locator("#ov-throughput svg").count() == 1
    c.page.unroute("**/admin/")
    c.page.wait_for_function("() => document.querySelector('.live-status').textContent === ''", timeout=30_000)

    # Paused: nothing changes while the data does; the choice outlives a reload.
    pause.click()
    assert pause.get_attribute("aria-pressed") == "true" and "Resume" in pause.inner_text()
    paused_at = _number(c, heading)
    task = region.submit("echo", {"live": 2})
    region.wait_task(task["id"])
    c.page.wait_for_function("(s) => { const m = /Updated (\\d+)/.exec(document.querySelector('.live-age').textContent);"
                             " return m && Number(m[1]) >= s; }", arg=3 * LIVE_SECONDS + 1, timeout=40_000)
    assert _number(c, heading) == paused_at
    c.open("/admin/")
    assert c.page.locator(".live-bar button.live-pause").get_attribute("aria-pressed") == "true"
    c.page.evaluate("() => { window.__marker = 'after reload'; }")
    c.page.locator(".live-bar button.live-pause").click()  # resume
    resumed = _number(c, heading)
    task = region.submit("echo", {"live": 3})
    region.wait_task(task["id"])
    c.page.wait_for_function("([sel, before]) => document.querySelector(sel).innerText !== before",
                             arg=[heading, resumed], timeout=30_000)
    assert c.page.evaluate("() => window.__marker") == "after reload"

    # The session ends: the page says so and stops asking.
    c.context.clear_cookies()
    c.page.wait_for_function("() => /Session expired/.test(document.querySelector('.live-status').textContent)",
                             timeout=30_000)
    assert c.page.locator(".live-bar button.live-pause").is_disabled()
    assert c.page.locator("#ov-throughput svg").count() == 1


def test_task_list_gains_a_new_task_without_a_reload(fleet, console):
    router, region = fleet
    c = console(region)
    c.open("/admin/regions/task/")
    counter = c.page.inner_text("p.paginator")
    rows = c.page.locator("#result_list tbody tr").count()
    c.page.evaluate("() => { window.__marker = 'same page'; }")
    task = region.submit("echo", {"listed": True})
    c.page.wait_for_function("(before) => document.querySelector('p.paginator').innerText !== before",
                             arg=counter, timeout=30_000)
    assert c.page.evaluate("() => window.__marker") == "same page"
    assert c.page.locator("#result_list tbody tr").count() == rows + 1
    assert c.page.locator("#result_list", has_text=task["id"][:8]).count() == 1
    # The actions still work on the new rows: selecting one counts it.
    c.page.locator("#result_list tbody tr").first.locator("input.action-select").check()
    assert c.page.inner_text("span.action-counter").startswith("1 of")
