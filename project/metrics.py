"""Prometheus /metrics for both roles, computed at scrape time from the role's
own state (database aggregates, Redis), so every web process answers the same
without a multiprocess registry. The role's app reads that state: its collector
is named in settings.METRICS_COLLECTORS (regions.metrics, router.metrics).
Authenticated: METRICS_TOKEN as a bearer, or a staff API key."""
from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse
from django.utils.module_loading import import_string
from drf_spectacular.utils import extend_schema
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from rest_framework.exceptions import NotAuthenticated
from rest_framework.permissions import BasePermission
from rest_framework.views import APIView

from project.accounts.authentication import ApiKeyAuthentication, MetricsTokenAuthentication, Principal


class MetricsReader(BasePermission):
    """The scraper's token or a staff key; anyone else is told what to bring (401)."""

    def has_permission(self, request, view) -> bool:
        if isinstance(request.user, Principal) or getattr(request.user, "is_staff", False):
            return True
        raise NotAuthenticated("Bearer METRICS_TOKEN or a staff API key is required.")


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
