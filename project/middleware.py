"""What DRF's exception handler does for API views, for everything else (plain
Django views such as the heartbeat hot path, the admin, /metrics, the URL
resolver): a database that is down is a 503 JSON answer with Retry-After, never
a 500 HTML page; any other error on an API path is JSON too (see Error pages)."""
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.urls import Resolver404
from django.views import defaults

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


# --- Error pages ---------------------------------------------------------------
# Everything this service answers is an API but the admin: an error there is
# JSON, {"error": code, "detail": message}, like DRF's (project.exceptions),
# whichever layer produced it: the URL resolver (404), a plain view's method
# decorator (405), a body over DATA_UPLOAD_MAX_MEMORY_SIZE (413), a suspicious
# request (400), an unhandled exception (500). The admin keeps Django's pages.
HTML_PREFIXES = ("/admin/",)
ERROR_CODES = {
    400: "bad_request", 401: "not_authenticated", 403: "permission_denied", 404: "not_found",
    405: "method_not_allowed", 413: "payload_too_large", 500: "server_error",
}


def api_path(path: str) -> bool:
    return not path.startswith(HTML_PREFIXES)


def error_response(status: int, detail: str, code: str | None = None) -> JsonResponse:
    return JsonResponse({"error": code or ERROR_CODES.get(status, "error"), "detail": detail}, status=status)


def _is_json(response) -> bool:
    return response.get("Content-Type", "").startswith("application/json")


class ApiErrorMiddleware:
    """Outermost: an error answer on an API path that is not JSON yet becomes
    JSON (a plain Django view's 405, Django's 404 page in DEBUG, a CSRF 403)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.status_code < 400 or _is_json(response) or not api_path(request.path):
            return response
        if response.status_code == 405:
            allowed = response.get("Allow", "")
            json_response = error_response(405, f"Method {request.method} is not allowed here; allowed: {allowed}.")
            json_response["Allow"] = allowed
            return json_response
        if response.status_code == 404:
            return error_response(404, f"Nothing at {request.path}.")
        return error_response(response.status_code, response.reason_phrase + ".")


# Django's handler400/403/404/500 (project/urls.py): JSON on API paths.
def bad_request(request, exception):
    if not api_path(request.path):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        return error_response(413, f"Request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")
    return error_response(400, f"Bad request ({type(exception).__name__}).")


def permission_denied(request, exception):
    if not api_path(request.path):
        return defaults.permission_denied(request, exception)
    return error_response(403, str(exception) or "Permission denied.")


def page_not_found(request, exception):
    if not api_path(request.path):
        return defaults.page_not_found(request, exception)
    if isinstance(exception, Resolver404) or not str(exception):
        return error_response(404, f"Nothing at {request.path}.")
    return error_response(404, str(exception))


def server_error(request):
    if not api_path(request.path):
        return defaults.server_error(request)
    return error_response(500, "Internal server error; the details are in the server's log.")
