from django.conf import settings
from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from project.metrics import metrics_view


def healthz(request):
    return JsonResponse({"ok": True, "role": settings.ROLE, "region_id": settings.REGION_ID})


urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz),
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    path("metrics", metrics_view, name="metrics"),
]

if settings.ROLE == "region":
    urlpatterns.append(path("api/v1/", include("regions.api.urls")))
else:
    urlpatterns.append(path("", include("router.urls")))

if settings.BENCH_ENDPOINTS:
    from regions import bench_views

    urlpatterns += [
        path("bench/bare/<slug:agent_id>", bench_views.bare_view),
        path("bench/pg-heartbeat/<slug:agent_id>", bench_views.pg_heartbeat_view),
    ]
