"""Prometheus /metrics for both roles, computed at scrape time from the role's
own state (database aggregates, Redis), so every web process answers the same
without a multiprocess registry. The role's app reads that state: its collector
is named in settings.METRICS_COLLECTORS (regions.metrics, router.metrics).
Authenticated: METRICS_TOKEN as a bearer, or an API key with the fleet:read scope."""
from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse
from django.utils.module_loading import import_string
from drf_spectacular.utils import extend_schema
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from rest_framework.exceptions import NotAuthenticated, PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.views import APIView

from project.accounts.authentication import ApiKeyAuthentication, MetricsTokenAuthentication, Principal
from project.accounts.scopes import scopes_of


class MetricsReader(BasePermission):
    """The scraper's token or a key that may read the fleet; anyone else is told
    what to bring (401), a key without the scope what it lacks (403)."""

    def has_permission(self, request, view) -> bool:
        if isinstance(request.user, Principal) or "fleet:read" in scopes_of(request):
            return True
        if getattr(request.user, "is_authenticated", False):
            raise PermissionDenied("This credential lacks the fleet:read scope (or bring METRICS_TOKEN).")
        raise NotAuthenticated("Bearer METRICS_TOKEN or an API key with the fleet:read scope is required.")


@extend_schema(exclude=True)  # described by project.schema's postprocessing hook (a text/plain answer)
class MetricsView(APIView):
    authentication_classes = [MetricsTokenAuthentication, ApiKeyAuthentication]
    permission_classes = [MetricsReader]

    def perform_content_negotiation(self, request, force=False):
        # The answer is Prometheus's text whatever the scraper's Accept says (a
        # refusal is JSON): no 406 for `text/plain` or OpenMetrics.
        return super().perform_content_negotiation(request, force=True)

    def get(self, request):
        registry = CollectorRegistry()
        registry.register(import_string(settings.METRICS_COLLECTORS[settings.ROLE])())
        return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


metrics_view = MetricsView.as_view()
