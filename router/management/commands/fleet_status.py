"""manage.py fleet_status: the fleet overview as tables (project/fleet_status.py)."""
from project.fleet_status import Command  # noqa: F401
