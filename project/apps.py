from django.contrib.admin.apps import AdminConfig


class MeridianAdminConfig(AdminConfig):
    """The admin with the fleet overview as its home (project/admin_site.py)."""

    default_site = "project.admin_site.MeridianAdminSite"
