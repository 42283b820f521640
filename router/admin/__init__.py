"""The router's admin: the region directory as an operator reads it (regions),
and the agents' registration tokens (tokens).

Summary fields belong to the regions (read-only here); tokens are made by the
services and shown once, on the page right after (never stored, never put in a
message cookie); only their digests are kept.
"""
from router.admin import regions, tokens  # noqa: F401  (registers both with the admin site)
