"""Every URL of both roles refuses a caller without a credential, except those the
security model (docs/security.md) names as open. The URLs come from each role's
URL resolver (not a list kept by hand): a new endpoint is walked the day it is added."""
import json
import re
import re._constants as sre_c
import re._parser as sre_parse
import subprocess
import sys

import pytest

from tests import harness
from tests.accounting import record

pytestmark = pytest.mark.integration

SECURITY_MODEL = harness.ROOT / "docs" / "security.md"
ADMIN_LOGIN = "/admin/login/"  # the one admin page that must take an anonymous caller: it is the way in


# --- the walk (runs inside each role's settings, see _role_urls) -------------------------

def _sample(regex: str) -> str:
    """The shortest string the regex matches, taking the first alternative and a
    letter or digit for each character class: a concrete URL for each pattern."""
    return "".join(_emit(sre_parse.parse(regex)))


def _char_for(items) -> str:
    for op, arg in items:
        if op is sre_c.LITERAL:
            return chr(arg)
        if op is sre_c.RANGE:
            return chr(arg[0])
        if op is sre_c.CATEGORY:
            return "1" if arg is sre_c.CATEGORY_DIGIT else "a"
        if op is sre_c.NEGATE:
            return "a"
    return "a"


def _emit(parsed):
    for op, arg in parsed:
        if op is sre_c.LITERAL:
            yield chr(arg)
        elif op is sre_c.NOT_LITERAL or op is sre_c.ANY:
            yield "a"
        elif op is sre_c.IN:
            yield _char_for(arg)
        elif op is sre_c.SUBPATTERN:
            yield from _emit(arg[-1])
        elif op is sre_c.BRANCH:
            yield from _emit(arg[1][0])
        elif op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, getattr(sre_c, "POSSESSIVE_REPEAT", None)):
            low, _, item = arg
            for _ in range(max(low, 1) if item else low):
                yield from _emit(item)
        # AT (anchors), ASSERT, GROUPREF: nothing to emit


def _walk(resolver, prefix: str = ""):
    from django.urls import URLResolver

    for entry in resolver.url_patterns:
        regex = prefix + entry.pattern.regex.pattern.lstrip("^")
        if isinstance(entry, URLResolver):
            yield from _walk(entry, regex.removesuffix("\\Z").removesuffix("$"))
        else:
            yield regex, entry.lookup_str


def print_role_urls() -> None:
    """One concrete path per URL pattern of this process's role, as JSON."""
    import django

    django.setup()
    from django.urls import get_resolver, resolve

    urls = []
    for regex, view in _walk(get_resolver()):
        path = "/" + _sample("^" + regex)
        # A pattern shadowed by an earlier one is reached through that one: still walked.
        urls.append({"path": path, "view": resolve(path)._func_path, "pattern_view": view, "regex": regex})
    print(json.dumps(urls))


def _role_urls(server: harness.Region) -> list[dict]:
    out = subprocess.run([sys.executable, "-c", "from tests.test_url_walk import print_role_urls; print_role_urls()"],
                         cwd=harness.ROOT, env=server.env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def documented_open_endpoints() -> set[str]:
    """The security model (docs/security.md): "Every endpoint but `/healthz` needs a credential"."""
    line = next(line for line in SECURITY_MODEL.read_text().splitlines() if line.startswith("- Every endpoint but"))
    return set(re.findall(r"`(/[^`]*)`", line.split("needs a credential")[0]))


# --- the servers ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def region(region_template):
    r = harness.Region(region_template)
    r.start_web()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def router(router_template):
    r = harness.Router(router_template)
    r.start_web()
    yield r
    r.stop()


def _refusal(server, url: dict) -> list[str]:
    """What is wrong with the anonymous answers at one URL (empty: it refused)."""
    problems, served = [], 0
    admin = url["path"].startswith("/admin/")
    for method in ("GET", "POST", "OPTIONS"):
        r = server.session.request(method, server.url + url["path"], json={}, allow_redirects=admin, timeout=10)
        if r.status_code == 405:
            continue
        served += 1
        where = f"{method} {url['path']} ({url['view']})"
        if admin:
            # Anything there leads to the login page (possibly through its own redirect
            # first) or is refused (a POST without the CSRF token).
            if not (r.url.startswith(server.url + ADMIN_LOGIN) or r.status_code == 403):
                problems.append(f"{where}: {r.status_code} at {r.url}, not the admin login")
        elif r.status_code not in (401, 403):
            problems.append(f"{where}: {r.status_code} {r.text[:120]!r}")
        elif r.status_code == 401 and not (r.headers.get("Content-Type", "").startswith("application/json")
                                           and "error" in r.json()):
            problems.append(f"{where}: 401 without the JSON error shape: {r.text[:120]!r}")
    if not served:
        problems.append(f"{url['path']} ({url['view']}): answers neither GET nor POST; walk it with its method")
    return problems


@pytest.mark.parametrize("role", ["region", "router"])
def test_every_url_refuses_an_anonymous_caller_but_the_documented_open_ones(role, request):
    server = request.getfixturevalue(role)
    urls = _role_urls(server)
    open_ = documented_open_endpoints()
    assert open_ == {"/healthz", "/", "/favicon.ico"}, "docs/security.md and this test disagree on what is open"
    walked = {u["path"] for u in urls}
    assert open_ <= walked and ADMIN_LOGIN in walked
    assert len(urls) > 10, urls
    problems = []
    for url in urls:
        if url["path"] in open_:
            assert server.session.get(server.url + url["path"], timeout=10).status_code == 200
        elif url["path"] == ADMIN_LOGIN:
            assert server.session.get(server.url + url["path"], timeout=10).status_code == 200
        else:
            problems += _refusal(server, url)
    record(f"URL WALK {role}: urls={len(urls)} open={len(open_)} not_refused={len(problems)}")
    assert not problems, "\n".join(problems)
