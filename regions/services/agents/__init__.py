"""Agents in a region: the registry (registration, authentication, desired
state) and the heartbeat; the reaper and the liveness flush are clock jobs
(regions/clock/).

Every module logs to `regions.services.agents`, the name the agents' events
have always had (log pipelines select on it)."""
