"""What both roles' consoles show, written once (an app installed in each role):
the admin whose home is the fleet overview (admin_site.py, overview.py, its
SVG charts in svg.py), `manage.py fleet_status`, ages, exact times and badges
(formatting.py) and the page that shows a new token once
(templates/admin/token_once.html)."""
