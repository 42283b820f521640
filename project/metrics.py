"""Prometheus /metrics for both roles, computed at scrape time from the role's
own state (database aggregates, Redis), so every web process answers the same
without a multiprocess registry. The role's app reads that state: its collector
is named in settings.METRICS_COLLECTORS (regions.metrics, router.metrics).
Authenticated: METRICS_TOKEN as a bearer, or a staff API key."""
from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.utils.module_loading import import_string
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from rest_framework.exceptions import AuthenticationFailed

from project.accounts.authentication import ApiKeyAuthentication
from project.accounts.tokens import bearer_from_header
from project.exceptions import BEARER_CHALLENGE


def _authorized(request) -> bool:
    raw = bearer_from_header(request.META.get("HTTP_AUTHORIZATION"))
    if raw and settings.METRICS_TOKEN and hmac.compare_digest(raw, settings.METRICS_TOKEN):
        return True
    try:
        found = ApiKeyAuthentication().authenticate(request)
    except AuthenticationFailed:
        return False
    return bool(found and found[0].is_staff)


def metrics_view(request):
    if not _authorized(request):
        response = JsonResponse({"error": "not_authenticated",
                                 "detail": "Bearer METRICS_TOKEN or a staff API key is required."}, status=401)
        response["WWW-Authenticate"] = BEARER_CHALLENGE
        return response
    registry = CollectorRegistry()
    registry.register(import_string(settings.METRICS_COLLECTORS[settings.ROLE])())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
