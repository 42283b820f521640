from django.conf import settings
from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView


def healthz(request):
    return JsonResponse({"ok": True, "role": settings.ROLE, "region_id": settings.REGION_ID})


urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz),
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
]

if settings.ROLE == "region":
    urlpatterns.append(path("api/v1/", include("regions.api.urls")))
