"""The page at `/` of both roles: what this process is and where to go from
here (the console, the API docs, health). A browser gets HTML; an API client
(Accept: application/json, or anything that does not prefer HTML) gets the
same as JSON. Open like /healthz: it names nothing /healthz does not."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_safe


def landing_links() -> dict[str, str]:
    return {"console": "/admin/", "api_docs": "/api/docs", "api_schema": "/api/schema", "health": "/healthz",
            "metrics": "/metrics"}


def landing_context() -> dict:
    role = settings.ROLE
    region_id = settings.REGION_ID if role == "region" else None
    return {"role": role, "region_id": region_id,
            "name": f"Meridian region {region_id}" if role == "region" else "Meridian router",
            "links": landing_links()}


@require_safe
def landing(request: HttpRequest) -> HttpResponse:
    context = landing_context()
    # JSON first: `*/*` (curl, requests, httpx) is an API client; a browser names text/html.
    if request.get_preferred_type(["application/json", "text/html"]) == "text/html":
        response = render(request, "landing.html", context)
    else:
        response = JsonResponse({key: context[key] for key in ("role", "region_id", "name", "links")})
    patch_vary_headers(response, ["Accept"])
    return response


FAVICON = Path(__file__).resolve().parent / "static" / "console" / "favicon.svg"


@require_safe
def favicon(request: HttpRequest) -> HttpResponse:
    """/favicon.ico, which browsers ask for on pages that name no icon (the API
    docs, a JSON answer): the console's SVG icon, cached for a day."""
    response = HttpResponse(FAVICON.read_bytes(), content_type="image/svg+xml")
    response["Cache-Control"] = "public, max-age=86400"
    return response
