"""The OpenAPI schema of both roles (drf-spectacular) and its Swagger UI.

What the generator cannot see by itself lives here: which credential each
operation takes (one security scheme per credential kind), the one error shape,
the cursor-paginated envelope of lists, and the plain Django views the hot path
and the operators need (heartbeat, /metrics, /healthz), added by a
postprocessing hook so the heartbeat stays a plain view.

The schema and the docs need a credential like every other API: an API key, or
an admin session in a browser. Only /healthz is open (docs/security.md).
"""
from __future__ import annotations

from pathlib import Path

import drf_spectacular_sidecar
from django.conf import settings
from django.http import FileResponse, Http404
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.settings import spectacular_settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from project.accounts.authentication import (AGENT_TOKEN, API_KEY, METRICS_TOKEN, REGION_TOKEN,
                                             REGISTRATION_TOKEN, ROUTER_ASSERTION, ROUTER_LOCATE)
from project.validation import CAPABILITY_RE
from wire import endpoints


_BEARER = {"type": "http", "scheme": "bearer"}
SECURITY_SCHEMES = {
    API_KEY: {**_BEARER, "bearerFormat": "mk_…", "description":
              "A caller's API key (`manage.py create_api_key USER [--scope S]… [--staff]`). What it may do "
              "are its scopes: tasks:submit and tasks:read by default; tasks:read_all, tasks:operate, "
              "fleet:read (agents, region status, /metrics) and fleet:operate (drain, cordon, uncordon, revoke) "
              "when given. A call without the scope is 403 naming it."},
    AGENT_TOKEN: {**_BEARER, "description":
                  "The agent's own token, issued by its region at registration. An agent acts only as "
                  "itself: another agent's token is refused with 403."},
    REGISTRATION_TOKEN: {**_BEARER, "description":
                         "A registration token (`manage.py create_registration_token`, at the router "
                         "`manage.py router_add_registration_token`): lets an agent join. At a region, "
                         "the router's registration grant (`mra_…`, from the router's register_agent "
                         "answer) works too, for the agent id it names only. A token may have a number of "
                         "uses (`--max-uses`) and an expiry (`--expires-in`): past them it is refused with "
                         "401 token_used_up or token_expired; more than REGISTRATION_RATE_PER_TOKEN "
                         "registrations a minute with one token: 429 with Retry-After."},
    ROUTER_ASSERTION: {**_BEARER, "bearerFormat": "mra_…", "description":
                       "The router's assertion for a caller it forwards (signed with the router's Ed25519 key, "
                       "for this region, this body, once, for seconds): never made by hand. Refused with 401 "
                       "when invalid, expired, for another region or body, or already used; 503 when the "
                       "region cannot check it was used once."},
    ROUTER_LOCATE: {**_BEARER, "bearerFormat": "mra_…", "description":
                    "The router's locate assertion (purpose \"locate\"), made by its task finder for one region "
                    "and one task id, once, for seconds: it learns where a task is and nothing of what it holds. "
                    "No API key or forward assertion is taken in its place (401); one made for another task: 403."},
    REGION_TOKEN: {**_BEARER, "description":
                   "A region's token at the router (`manage.py router_add_region`): a region may only "
                   "update its own summary."},
    METRICS_TOKEN: {**_BEARER, "description": "METRICS_TOKEN, for a Prometheus scraper (an API key with the "
                                              "fleet:read scope works too)."},
}


# --- credentials ----------------------------------------------------------------

class BearerScheme(OpenApiAuthenticationExtension):
    """Each credential kind's authentication class says which scheme it is."""

    target_class = "project.accounts.authentication.BearerAuthentication"
    match_subclasses = True

    @property
    def name(self) -> str:
        return self.target.scheme

    def get_security_definition(self, auto_schema):
        return SECURITY_SCHEMES[self.target.scheme]


# --- shared response shapes ------------------------------------------------------

class ErrorSerializer(serializers.Serializer):
    """Every refusal: {"error": code, "detail": message, "fields"?: {name: [reasons]}}."""

    error = serializers.CharField(help_text="machine-readable code, e.g. invalid, not_authenticated")
    detail = serializers.CharField(help_text="what went wrong, for a person")
    fields = serializers.DictField(required=False, help_text="for 400: each invalid field and its reasons")


_ERROR_MEANING = {
    400: "The request is malformed or a field is invalid (named in `fields`).",
    401: "No credential, or not a valid one (WWW-Authenticate: Bearer).",
    403: "The credential may not do this.",
    404: "No such object in this region.",
    409: "The object is not in a state that allows this.",
    413: "The body is larger than the limit.",
    429: "Rate limited; Retry-After says when to retry.",
    503: "A store this needs (database, liveness Redis) is unavailable; Retry-After says when to retry.",
    504: "The region did not answer in time.",
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """The error answers an operation can give, each with the one error shape."""
    return {code: OpenApiResponse(ErrorSerializer, description=_ERROR_MEANING[code]) for code in codes}


def paginated(name: str, item: type[serializers.Serializer]) -> serializers.Serializer:
    """The envelope rest_framework's CursorPagination answers with."""
    return inline_serializer(name=name, fields={
        "next": serializers.URLField(allow_null=True, help_text="the next page, or null"),
        "previous": serializers.URLField(allow_null=True, help_text="the previous page, or null"),
        "results": item(many=True),
    })


# Re-registering an id whose agent is online takes that agent's current token too.
AGENT_TOKEN_PARAMETER = OpenApiParameter(
    endpoints.AGENT_TOKEN_HEADER, str, OpenApiParameter.HEADER,
    description="to re-register an id whose agent is online: that agent's current token (else 409 agent_id_in_use)")


def list_filters(statuses) -> list[OpenApiParameter]:
    """The filters of a list: a status out of `statuses`, a capability name."""
    return [
        OpenApiParameter("status", str, enum=list(statuses)),
        OpenApiParameter("capability", str, pattern=CAPABILITY_RE),
    ]


class PageQuerySerializer(serializers.Serializer):
    """The query of a paginated list (project.pagination.StrictCursorPagination)."""

    cursor = serializers.CharField(required=False, allow_blank=True,
                                   help_text="opaque: `next` or `previous` of the last page")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000, help_text="page size (default 100)")


PAGE_PARAMETERS = [PageQuerySerializer]


_FORWARD = {"type": "object", "required": ["region_id", "regional_orchestrator_url", "task"], "properties": {
    "region_id": {"type": "string"}, "regional_orchestrator_url": {"type": "string"},
    "task": {"type": "object", "description": "the region's answer: the task, or why it refused it"}}}
_FORWARD_OR_ERROR = {"anyOf": [{"$ref": "#/components/schemas/Error"}, _FORWARD]}

# The router passes a submission to a region and hands back the region's status
# and answer; its own refusals (no region, bad credential) have the error shape.
FORWARDED = {
    201: OpenApiResponse(_FORWARD, description="The region accepted the task."),
    200: OpenApiResponse(_FORWARD, description="The region already had it (same idempotency_key)."),
    **{code: OpenApiResponse(_FORWARD_OR_ERROR, description=_ERROR_MEANING[code] + " Refused here, or by the "
                             "region (then its answer is in `task`).") for code in (400, 401, 403, 409, 413, 429)},
    **errors(503, 504),
}


# --- plain Django views, added to the generated schema -----------------------------------

def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


_ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _error_answers(*codes: int) -> dict:
    return {str(code): {"description": _ERROR_MEANING[code], "content": _json(_ERROR_REF)} for code in codes}


def _healthz() -> dict:
    return {"get": {
        "operationId": "healthz", "tags": ["health"], "security": [{}],
        "description": "Liveness of the web process. The only endpoint that needs no credential.",
        "responses": {"200": {"description": "The process answers.", "content": _json({
            "type": "object", "required": ["ok", "role", "region_id"],
            "properties": {"ok": {"type": "boolean"}, "role": {"type": "string", "enum": ["region", "router"]},
                           "region_id": {"type": "string"}}})}},
    }}


def _metrics() -> dict:
    return {"get": {
        "operationId": "metrics", "tags": ["metrics"],
        "security": [{METRICS_TOKEN: []}, {API_KEY: []}],
        "description": "Prometheus metrics of this role, computed at scrape time. Bearer METRICS_TOKEN or an "
                       "API key with the fleet:read scope.",
        "responses": {"200": {"description": "Prometheus text exposition format.",
                              "content": {"text/plain": {"schema": {"type": "string"}}}},
                      **_error_answers(401, 403, 503)},
    }}


def _heartbeat(agent_id: dict) -> dict:
    busy = {"type": "integer", "minimum": 0, "description": "tasks running now",
            "maximum": endpoints.MAX_BUSY}  # the view's own bound
    return {"post": {
        "operationId": "agent_heartbeat", "tags": ["agents"], "security": [{AGENT_TOKEN: []}],
        "description": "The hot path: an agent says it is alive (one Redis round trip, no database write). "
                       "The answer tells it how often to beat and what it should be doing.",
        "parameters": [agent_id],
        "requestBody": {"required": False, "content": _json({
            "type": "object", "properties": {"busy": busy}})},
        "responses": {"200": {"description": "Recorded.", "content": _json({
            "type": "object", "required": ["interval", "ttl", "desired"],
            "properties": {"interval": {"type": "number"}, "ttl": {"type": "number"},
                           "desired": {"type": "string", "enum": ["active", "draining", "cordoned", "stopped"]}}})},
                      **_error_answers(400, 401, 403, 404, 503)},
    }}


def postprocess(result: dict, generator, request, public) -> dict:
    """Add the plain views, leave no operation marked anonymous but /healthz, and
    document the 413 any POST can get."""
    paths = result.setdefault("paths", {})
    paths["/healthz"] = _healthz()
    paths["/metrics"] = _metrics()
    if settings.ROLE == "region":
        # The agent id exactly as the other agent operations take it (one URL converter).
        agent_id = next((p for p in paths.get(endpoints.DEREGISTER.url(agent_id="{agent_id}"), {}).get("post", {})
                         .get("parameters", []) if p.get("name") == "agent_id"),
                        {"in": "path", "name": "agent_id", "required": True, "schema": {"type": "string"}})
        paths[endpoints.HEARTBEAT.url(agent_id="{agent_id}")] = _heartbeat(agent_id)
    for item in paths.values():
        if isinstance(item.get("post"), dict):
            # Any body over the server's limit is refused before a view sees it.
            item["post"]["responses"].setdefault("413", _error_answers(413)["413"])
    components = result.setdefault("components", {})
    components.setdefault("schemas", {}).setdefault("Error", {
        "type": "object", "required": ["error", "detail"],
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}, "fields": {"type": "object"}}})
    components.setdefault("securitySchemes", {}).update(
        {name: SECURITY_SCHEMES[name] for name in (METRICS_TOKEN, API_KEY)}
        | ({AGENT_TOKEN: SECURITY_SCHEMES[AGENT_TOKEN]} if settings.ROLE == "region" else {}))
    result["paths"] = dict(sorted(paths.items()))
    return result


# --- the views that serve it --------------------------------------------------------

class _JsonErrors:
    """A refusal is JSON, whatever the page would have been rendered as."""

    def handle_exception(self, exc):
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)


class SchemaApi(_JsonErrors, SpectacularAPIView):
    """The schema, JSON unless YAML is asked for (?format=yaml or Accept)."""

    renderer_classes = SpectacularAPIView.renderer_classes[2:] + SpectacularAPIView.renderer_classes[:2]

    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=["json", "yaml"])],
        responses={(200, "application/vnd.oai.openapi+json"): OpenApiResponse(
            {"type": "object"}, description="OpenAPI 3 document"),
            (200, "application/json"): OpenApiResponse({"type": "object"}, description="OpenAPI 3 document"),
            (200, "application/vnd.oai.openapi"): OpenApiResponse({"type": "string"}, description="YAML"),
            (200, "application/yaml"): OpenApiResponse({"type": "string"}, description="YAML"),
            (404, "application/json"): OpenApiResponse(ErrorSerializer, description="No such ?format (json, yaml)."),
            **{(code, "application/json"): r for code, r in errors(401, 503).items()}},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class DocsView(_JsonErrors, SpectacularSwaggerView):
    """Swagger UI, its assets served by this process (no CDN: see DocsAssetView)."""

    url_name = "schema"


_SWAGGER_DIST = Path(drf_spectacular_sidecar.__file__).parent / "static" / "drf_spectacular_sidecar" / "swagger-ui-dist"
_ASSET_TYPES = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript",
                "swagger-ui-standalone-preset.js": "text/javascript", "favicon-32x32.png": "image/png"}


class DocsAssetView(APIView):
    """Swagger UI's files, vendored by the pinned drf-spectacular-sidecar.

    Served by the web process itself: a deployment here has no static file server
    (gunicorn only), and the docs must not load code from a CDN. Behind the same
    credential as the docs (the browser that loaded the page sends its session)."""

    permission_classes = spectacular_settings.SERVE_PERMISSIONS
    renderer_classes = [JSONRenderer]

    @extend_schema(exclude=True)
    def get(self, request, name: str):
        if name not in _ASSET_TYPES:
            raise Http404
        response = FileResponse(open(_SWAGGER_DIST / name, "rb"), content_type=_ASSET_TYPES[name])
        response["Cache-Control"] = "private, max-age=86400"
        return response
