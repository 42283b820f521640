from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class ConsoleConfig(AppConfig):
    """What both roles' consoles show: the overview, its charts, `manage.py
    fleet_status`, the formatting of ages, times and badges, token_once.html."""

    name = "console"


class MeridianAdminConfig(AdminConfig):
    """The admin with the fleet overview as its home (console/admin_site.py)."""

    default_site = "console.admin_site.MeridianAdminSite"
