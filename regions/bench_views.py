"""Baselines for bench/heartbeat.py, mounted only when BENCH_ENDPOINTS=1.

`bare` is the floor a Django view can reach here; `pg_heartbeat` is the
article's design (a PostgreSQL UPDATE per check-in) for comparison.
"""
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from project.accounts.tokens import bearer_from_header, token_hash
from regions.models import Agent


@csrf_exempt
def bare_view(request, agent_id: str):
    return JsonResponse({"interval": 5.0, "ttl": 15.0, "desired": "active"})


@csrf_exempt
def pg_heartbeat_view(request, agent_id: str):
    digest = token_hash(bearer_from_header(request.META.get("HTTP_AUTHORIZATION")) or "")
    updated = Agent.objects.filter(agent_id=agent_id, token_hash=digest).update(last_seen=timezone.now())
    if not updated:
        return JsonResponse({"error": "not_authenticated"}, status=401)
    return JsonResponse({"interval": 5.0, "ttl": 15.0, "desired": "active"})
