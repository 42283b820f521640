"""The console's page furniture, in-process: live pages load the update script
(and no `<meta http-equiv="refresh">`, which reset focus and closed sections),
every badge readable (contrast ≥ 4.5:1, WCAG AA), a favicon, and a landing page
at `/` of both roles (HTML for a browser, JSON for an API client).
The browser side (the script really updating, axe) is tests/test_browser.py."""
from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders

from console import formatting

pytestmark = pytest.mark.django_db

STYLE = formatting.__file__.replace("formatting.py", "templates/overview/style.html")
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


def _luminance(colour: str) -> float:
    hex_ = colour.lstrip("#")
    hex_ = "".join(c * 2 for c in hex_) if len(hex_) == 3 else hex_
    channels = [int(hex_[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_contrast_is_computed_as_wcag_says():
    assert contrast("#ffffff", "#000000") == pytest.approx(21)
    assert contrast("#d6a100", "#ffffff") == pytest.approx(2.34, abs=0.01)  # the drift yellow axe measured


@pytest.mark.parametrize("name", sorted(formatting.COLOURS))
def test_every_admin_badge_colour_carries_white_text_at_4_5_to_1(name):
    """Was: yellow (waiting, cordoned) 3.44:1, orange 4.3:1."""
    assert contrast(formatting.COLOURS[name], "#ffffff") >= 4.5, (name, formatting.COLOURS[name])


def test_every_overview_badge_class_carries_its_text_at_4_5_to_1():
    """Was: drift yellow 2.34:1, healthy green 3.46:1, quiet grey 2.64:1 (style.html's .ov-* badges)."""
    css = open(STYLE).read()
    text = re.search(r"\.ov-badge \{[^}]*[^-]color: (#[0-9a-f]{3,6})\b", css).group(1)
    backgrounds = dict(re.findall(r"\.(ov-[a-z]+) \{ background: (#[0-9a-f]{6}); \}", css))
    assert {"ov-ok", "ov-bad", "ov-warn", "ov-quiet"} <= set(backgrounds), backgrounds
    low = {name: round(contrast(bg, text), 2) for name, bg in backgrounds.items() if contrast(bg, text) < 4.5}
    assert not low, low


# --- live pages ----------------------------------------------------------------

def _live_script(page: str) -> re.Match | None:
    return re.search(r'<script src="/static/console/live\.js" data-interval="(\d+)" data-parts="([^"]+)" defer>', page)


def test_overview_updates_itself_by_script_not_by_a_meta_refresh(admin_client, redis_clean):
    page = admin_client.get("/admin/").content.decode()
    assert 'http-equiv="refresh"' not in page
    script = _live_script(page)
    assert script and script.group(2) == "#fleet-overview", page[:3000]
    assert int(script.group(1)) >= 2


@pytest.mark.parametrize("path", ["/admin/regions/agent/", "/admin/regions/task/"])
def test_agent_and_task_lists_update_their_rows_and_counter(admin_client, path):
    page = admin_client.get(path).content.decode()
    script = _live_script(page)
    assert script, page[:3000]
    assert "#result_list" in script.group(2).split(",") and "p.paginator" in script.group(2).split(",")


@pytest.mark.parametrize("path", ["/admin/auth/user/add/", "/admin/regions/deadletter/", "/admin/login/"])
def test_other_pages_do_not_update_themselves(admin_client, client, path):
    r = (client if "login" in path else admin_client).get(path)
    assert r.status_code == 200
    assert "live.js" not in r.content.decode()


def test_the_update_script_is_a_static_file():
    path = finders.find("console/live.js")
    assert path, "console/static/console/live.js not found by the static finders"
    source = open(path).read()
    assert "fetch(" in source and "DOMParser" in source and "localStorage" in source
    assert "http" not in re.sub(r"//.*|/\*[\s\S]*?\*/", "", source).replace("'HTTP ", "")  # nothing from afar


# --- favicon ----------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/admin/login/", "/admin/", "/admin/regions/task/"])
def test_admin_pages_name_a_favicon(admin_client, client, path):
    page = (client if "login" in path else admin_client).get(path).content.decode()
    assert re.search(r'<link rel="icon" href="/static/console/favicon\.svg" type="image/svg\+xml">', page), page[:1500]
    assert finders.find("console/favicon.svg")
    for name in ("console/console.css", "console/a11y.js"):  # every admin page: accessibility mends
        assert f"/static/{name}" in page and finders.find(name), name


def test_favicon_ico_answers_with_the_icon(client):
    """Was: a 404 on every page a browser opened outside the admin."""
    r = client.get("/favicon.ico")
    assert r.status_code == 200 and r["Content-Type"] == "image/svg+xml"
    assert b"<svg" in b"".join(r.streaming_content) if r.streaming else b"<svg" in r.content
    assert "max-age" in r["Cache-Control"]


# --- the landing page at / ----------------------------------------------------------

def test_root_of_a_region_is_a_landing_page_for_a_browser(client, settings):
    """Was: a JSON 404 for a person who typed the region's address."""
    settings.REGION_ID = "eu-west-3"
    r = client.get("/", HTTP_ACCEPT=BROWSER_ACCEPT)
    assert r.status_code == 200 and r["Content-Type"].startswith("text/html")
    assert "Accept" in r["Vary"]
    page = r.content.decode()
    assert "<title>Meridian region eu-west-3</title>" in page
    for href in ("/admin/", "/api/docs", "/api/schema", "/healthz"):
        assert f'href="{href}"' in page, href
    assert '<html lang="en">' in page and '<link rel="icon"' in page


@pytest.mark.parametrize("accept", ["application/json", "*/*", None])
def test_root_of_a_region_answers_json_to_an_api_client(client, settings, accept):
    settings.REGION_ID = "eu-west-3"
    r = client.get("/", **({"HTTP_ACCEPT": accept} if accept else {}))
    assert r.status_code == 200 and r["Content-Type"].startswith("application/json"), r.content[:300]
    body = r.json()
    assert body["role"] == "region" and body["region_id"] == "eu-west-3"
    assert body["links"]["console"] == "/admin/" and body["links"]["health"] == "/healthz"
    assert body["links"]["api_docs"] == "/api/docs"


def test_root_answers_only_get_and_head(client):
    assert client.post("/").status_code == 405


@pytest.mark.urls("tests.router_urls")
def test_root_of_the_router_is_a_landing_page_and_json(client, settings):
    settings.ROLE = "router"
    page = client.get("/", HTTP_ACCEPT=BROWSER_ACCEPT).content.decode()
    assert "<title>Meridian router</title>" in page and 'href="/admin/"' in page
    body = client.get("/", HTTP_ACCEPT="application/json").json()
    assert body["role"] == "router" and body["region_id"] is None
