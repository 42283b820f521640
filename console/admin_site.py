"""The admin whose home is the fleet overview (console/overview.py), above the
list of models; "View site" leads there too (the site itself has no page at /).
Every model's list checks the ids an action is posted with (console/action_ids.py)."""
from functools import wraps

from django.conf import settings
from django.contrib import admin
from django.urls import reverse

from console.action_ids import malformed_ids, malformed_ids_page
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

    def admin_view(self, view, cacheable=False):
        """Every admin page goes through here (ModelAdmin.get_urls wraps each
        view with it): each model's list, of both roles and Django's own (users,
        groups), refuses an action posted with an id that is not one of its
        model's with a 400, before Django puts the ids in a query."""
        model_admin = getattr(view, "__self__", None)
        if isinstance(model_admin, admin.ModelAdmin) and getattr(view, "__name__", "") == "changelist_view":
            changelist_view = view

            @wraps(changelist_view)
            def view(request, *args, **kwargs):
                bad = malformed_ids(model_admin, request)
                if bad:
                    return malformed_ids_page(model_admin, request, bad)
                return changelist_view(request, *args, **kwargs)

        return super().admin_view(view, cacheable)

    def index(self, request, extra_context=None):
        """Behind admin_view like every admin page: staff only, others go to the login."""
        return super().index(request, {**overview_context(), **(extra_context or {})})
