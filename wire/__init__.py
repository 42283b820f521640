"""The agent <-> region wire contract: what both sides import, and nothing else does.

- `endpoints`  the agent's HTTP calls (register, heartbeat, claim, report, dead
               letters, deregister; discovery at the router), as one table the
               region's URLs are built from and the agent's client formats
- `protocol`   over the broker: task names, queue names, the execute message
               and its parsing, the attempt's time limits
- `signing`    the signature of a report sent over the broker
- `broker`     the Celery settings both sides derive from a broker URL
- `consumer`   the worker consumer both sides run: bounded decoding, and what
               it cannot take becomes a dead letter
- `deadletter` the dead-letter record every consumer writes

It imports no app (regions, agents, router, console): tests/test_imports.py.
"""
