"""The router's URLs, for in-process tests (the test settings run as a region)."""
from django.urls import include, path

from console.landing import favicon, landing
from project.metrics import metrics_view

urlpatterns = [path("", landing), path("favicon.ico", favicon), path("metrics", metrics_view),
               path("", include("router.urls"))]
