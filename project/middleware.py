"""What DRF's exception handler does for API views, for everything else (plain
Django views such as the heartbeat hot path, the admin, /metrics): a database
that is down is a 503 JSON answer with Retry-After, never a 500 HTML page."""
from project.exceptions import database_unavailable, database_unavailable_log, database_unavailable_response


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not database_unavailable(exception):
            return None  # Django's own 500 handling
        database_unavailable_log(exception, f"{request.method} {request.path}")
        return database_unavailable_response()
