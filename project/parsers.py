"""Request body parsing that answers 400, never 500, to any JSON."""
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from project.jsonsafe import MAX_DEPTH


class SafeJSONParser(JSONParser):
    """JSON nested deeper than Python's recursion limit is a client error, told
    as the bound a body must keep (how deep the parser gets before it gives up
    depends on the stack under it, not on the body)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels.") from None
