"""Cursor pagination that refuses what it does not understand.

rest_framework's CursorPagination quietly serves the default page for a page
size it cannot read (`limit=abc`, `limit=0`) and answers a cursor it cannot
decode with 404. A caller then believes it asked for something it did not get,
or for something that does not exist; here both are a 400 naming the parameter."""
from __future__ import annotations

import re

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination

_DIGITS = re.compile(r"[0-9]{1,7}")


class StrictCursorPagination(CursorPagination):
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000

    def get_page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= self.max_page_size:
            raise ValidationError({self.page_size_query_param: [
                f"page size must be an integer from 1 to {self.max_page_size}."]})
        return int(raw)

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ValidationError({self.cursor_query_param: [
                "invalid cursor: pass back `next` or `previous` exactly as received."]}) from None
