"""The region's admin: a console over the services, never around them.

Every page is read-only (no add, no change, no delete): the system owns these
rows, and state changes only through actions that call the services (which also
tell the agent through Redis, revoke credentials, fence attempts and dispatch).
"""
# Imported for their registrations.
from regions.admin import agents, config, deadletters, ingest, schedules, tasks, tokens, workflows  # noqa: F401
