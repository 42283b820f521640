"""`manage.py demo`: a Global Task Router and three regions on this machine,
each with its own database, broker, beat and agents, doing real work.

- ``layout``: which processes, on which ports, with which environment;
- ``local_services``: Redis, the per-region brokers, the configuration
  repository and the sample data the agents read;
- ``fleet``: setting the roles up, starting them under the supervisor
  (``regions/management/supervisor.py``) and stopping them;
- ``traffic``: tasks submitted through the router and watched to the end;
- ``report``: what the demo prints about the running fleet.
"""
