"""The router's URLs, for in-process tests (the test settings run as a region)."""
from django.urls import include, path

urlpatterns = [path("", include("router.urls"))]
