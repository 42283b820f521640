"""The caller's signing secret for completion callbacks: made or replaced, and
shown this once (docs/api.md)."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from project.accounts.audit import audited
from project.schema import errors
from regions.services.callbacks.secret import callback_secret_rotate


class CallbackSecretRotateApi(APIView):
    """Not forwardable: the router never sees the secret (a caller asks the
    region itself; each region keeps its own)."""

    required_scopes = ("tasks:submit",)

    @extend_schema_serializer(component_name="CallbackSecret")
    class OutputSerializer(serializers.Serializer):
        secret = serializers.CharField(help_text="whsec_…: shown this once; keep it where your receiver reads it")
        created_at = serializers.DateTimeField()
        signature_header = serializers.CharField(help_text="the header every callback carries its signature in")

    @extend_schema(operation_id="callbacks_secret_rotate", request=None,
                   responses={201: OutputSerializer, **errors(401, 403, 503)})
    def post(self, request):
        with audited(request, "callbacks.secret_rotate", target=request.user.get_username()):
            secret = callback_secret_rotate(user=request.user)
        return Response({"secret": secret.secret, "created_at": secret.created_at,
                         "signature_header": "Meridian-Signature"}, status=status.HTTP_201_CREATED)
