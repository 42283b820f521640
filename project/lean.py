"""The agent protocol's hot path: an agent's heartbeat, claim and report go
through a Django handler of their own, with only the middleware a bearer-token
request needs; every other path takes the whole stack (settings.MIDDLEWARE).

Left out for these three, and why nothing is lost:
- sessions, CSRF, authentication and messages: an agent sends no cookie and
  authenticates with its token in the view (a plain view, or DRF's
  AgentTokenAuthentication, which reads no session);
- django-axes: it guards the admin's login form;
- WhiteNoise: these are not static files.
Kept: errors as JSON and a database down as 503 (project/middleware.py), the
security headers every answer carries (X-Frame-Options included), and
CommonMiddleware: it checks the Host header against ALLOWED_HOSTS (400
otherwise), as on every other path.

A caller's route query at the router (GET /api/v1/route) takes it too when it
carries no cookie: it authenticates with an API key in the view (DRF's
ApiKeyAuthentication). With a cookie it may be a console user's session, which
needs the session and authentication middleware: the whole stack.

Measured per request, in-process (bench/hotpath.py): the middleware left out
was about a third of a heartbeat's time in Django (BENCHMARKS.md)."""
from __future__ import annotations

import re

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

from wire.endpoints import CLAIM, HEARTBEAT, REPORT

LEAN_MIDDLEWARE = (
    "project.middleware.ApiErrorMiddleware",
    "project.middleware.DatabaseUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
)
LEAN_ENDPOINTS = (HEARTBEAT, CLAIM, REPORT)
LEAN_WITHOUT_COOKIE = frozenset({"/api/v1/route"})  # router/urls.py


class LeanHandler(WSGIHandler):
    """Django's WSGI handler with only LEAN_MIDDLEWARE (in settings.MIDDLEWARE's order)."""

    def load_middleware(self, is_async: bool = False) -> None:
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = [m for m in full if m in LEAN_MIDDLEWARE]
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


def lean_for_agents(full_app, lean_app=None):
    """A WSGI application: the agent protocol's paths, and a route query without
    a cookie, to `lean_app` (a LeanHandler by default); every other request to `full_app`."""
    lean_app = lean_app or LeanHandler()
    match = re.compile("(?:%s)" % "|".join(e.pattern for e in LEAN_ENDPOINTS)).fullmatch

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        lean = match(path) or (path in LEAN_WITHOUT_COOKIE and "HTTP_COOKIE" not in environ)
        return (lean_app if lean else full_app)(environ, start_response)

    return app
