from django.conf import settings
from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path
from django.views.decorators.http import require_safe

from project.metrics import metrics_view
from project.schema import DocsAssetView, DocsView, SchemaApi
from wire.endpoints import REGION_API_ROOT


@require_safe  # GET and HEAD: anything else (TRACE too) is 405
def healthz(request):
    return JsonResponse({"ok": True, "role": settings.ROLE, "region_id": settings.REGION_ID})


# JSON on API paths, Django's pages on the admin (project/middleware.py).
handler400 = "project.middleware.bad_request"
handler403 = "project.middleware.permission_denied"
handler404 = "project.middleware.page_not_found"
handler500 = "project.middleware.server_error"

urlpatterns = [
    path("", include("console.urls")),  # / for a person typing this process's address, and /favicon.ico
    path("admin/", admin.site.urls),
    path("healthz", healthz),
    path("api/schema", SchemaApi.as_view(), name="schema"),
    path("api/docs", DocsView.as_view(), name="docs"),
    path("api/docs/assets/<str:name>", DocsAssetView.as_view(), name="docs-asset"),
    path("metrics", metrics_view, name="metrics"),
]

if settings.ROLE == "region":
    urlpatterns.append(path(REGION_API_ROOT, include("regions.api.urls")))
else:
    urlpatterns.append(path("", include("router.urls")))

if settings.BENCH_ENDPOINTS:
    urlpatterns.append(path("bench/", include("regions.bench_urls")))
