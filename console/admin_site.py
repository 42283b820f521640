"""The admin whose home is the fleet overview (console/overview.py), above the
list of models; "View site" leads there too (the site itself has no page at /)."""
from django.conf import settings
from django.contrib import admin
from django.urls import reverse

from console.overview import overview_context


class MeridianAdminSite(admin.AdminSite):
    index_template = "overview/index.html"
    index_title = "Fleet overview"

    @property
    def site_header(self) -> str:
        return f"Meridian {settings.REGION_ID}" if settings.ROLE == "region" else "Meridian router"

    @property
    def site_title(self) -> str:
        return self.site_header

    def each_context(self, request):
        context = super().each_context(request)
        context["site_url"] = reverse("admin:index", current_app=self.name)
        return context

    def index(self, request, extra_context=None):
        """Behind admin_view like every admin page: staff only, others go to the login."""
        return super().index(request, {**overview_context(), **(extra_context or {})})
