"""`/` (what this process is, for a person who typed its address) and `/favicon.ico`, on both roles."""
from django.urls import path

from console.landing import favicon, landing

urlpatterns = [
    path("", landing, name="landing"),
    path("favicon.ico", favicon, name="favicon"),
]
