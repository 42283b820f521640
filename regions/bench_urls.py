"""The bench baselines (regions/bench_views.py), mounted under bench/ by
project/urls.py only when BENCH_ENDPOINTS=1."""
from django.urls import path

from regions import bench_views

urlpatterns = [
    path("bare/<slug:agent_id>", bench_views.bare_view),
    path("pg-heartbeat/<slug:agent_id>", bench_views.pg_heartbeat_view),
]
