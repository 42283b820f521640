"""The router's URLs, for in-process tests (the test settings run as a region)."""
from django.urls import include, path

from project.metrics import metrics_view

urlpatterns = [path("", include("console.urls")), path("metrics", metrics_view), path("", include("router.urls"))]
