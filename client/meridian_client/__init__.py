"""Meridian's Python client, CLI and the public API for task code."""
from meridian_client.handlers import Context, HandlerError, HandlerSpec, handler, registered

__version__ = "0.1.0"

__all__ = ["Context", "HandlerError", "HandlerSpec", "handler", "registered", "__version__"]
