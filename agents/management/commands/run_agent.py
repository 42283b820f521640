"""Start an agent: register with the region, then run a Celery worker on its queues."""
import hashlib
import os
import re
import socket
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

import agents
from agents import runtime, state
from agents.client import RegionClient, RegionRefused, RouterClient
from agents.handlers import HandlerLoadError, handler_modules, handlers_load
from project.celery import app
from wire.broker import BROKER_ENV_OVERRIDES, celery_options
from wire.endpoints import REGISTRATION_GRANT
from wire.protocol import agent_node_name

# How long registration is retried (503, 429, a 409 while the id's old entry is
# still online, the router or region unreachable) before the agent gives up.
REGISTER_PATIENCE_SECONDS = 180


def default_agent_id(host: str, capabilities: list[str]) -> str:
    digest = hashlib.sha256(",".join(capabilities).encode()).hexdigest()[:6]
    name = re.sub(r"[^a-z0-9_-]+", "-", host.lower().split(".")[0]).strip("-") or "agent"
    return f"{name[:80]}-{digest}"


class Command(BaseCommand):
    help = "Run an agent: a Celery worker consuming one queue per capability plus its own."

    def add_arguments(self, parser):
        parser.add_argument("--handlers", default=None, metavar="MODULES",
                            help="comma-separated modules with @handler functions, e.g. mypkg.tasks (besides "
                                 "AGENT_HANDLER_MODULES and the meridian.handlers entry points; the built-ins, "
                                 "agents.handlers.builtin, when none is named)")
        parser.add_argument("--capabilities", default=None,
                            help="comma-separated subset of the loaded handlers to serve (default: all of them)")
        parser.add_argument("--agent-id", default=None)
        parser.add_argument("--concurrency", type=int, default=1)
        parser.add_argument("--router-url", default=settings.ROUTER_URL or None,
                            help="discover the region through the Global Task Router")
        parser.add_argument("--region", default=None, help="region hint for the router")
        parser.add_argument("--region-url", default=None, help="join this region directly (no router)")
        parser.add_argument("--registration-token", default=settings.AGENT_REGISTRATION_TOKEN)
        parser.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args, handlers, capabilities, agent_id, concurrency, router_url, region, region_url,
               registration_token, pool, loglevel, **options):
        modules = handler_modules(flag=handlers, environment=settings.AGENT_HANDLER_MODULES)
        try:
            known = handlers_load(modules)
        except HandlerLoadError as exc:
            # Refused for good (exit 78): a supervisor must not restart it in a loop.
            raise CommandError(str(exc), returncode=os.EX_CONFIG) from exc
        caps = sorted({c.strip() for c in (capabilities or "").split(",") if c.strip()} or known)
        missing = [c for c in caps if c not in known]
        if missing or not caps:
            raise CommandError(f"no handler for {', '.join(missing) or 'any capability'} in the modules loaded "
                               f"({', '.join(modules)}); they register: {', '.join(sorted(known)) or 'nothing'}. "
                               "Name the module with --handlers (the built-ins are agents.handlers.builtin).",
                               returncode=os.EX_CONFIG)
        declared = {c: known[c].declaration() for c in caps}
        if not registration_token:
            raise CommandError("a registration token is needed (--registration-token or AGENT_REGISTRATION_TOKEN)")
        host = socket.gethostname()
        # Stable across restarts (its outbox and identity survive a crash); give
        # --agent-id to run several agents of the same capabilities on one host.
        agent_id = agent_id or default_agent_id(host, caps)
        if not region_url and router_url:
            # The router's grant, for this agent and that region only, stands in for
            # the registration token there (a region need not know the router's tokens).
            region_url, grant = self._discover(router_url, registration_token, agent_id, caps, region)
            registration_token = grant or registration_token
        region_url = region_url or settings.REGION_URL
        # What a previous run of this agent finished but could not report goes
        # first, with its old credential: re-registering rotates it and puts
        # whatever is still recorded as running here back on the queue.
        runtime.outbox_flush(agent_id)
        reg = self._register(RegionClient(region_url), registration_token, agent_id, caps, host, concurrency,
                             declared)
        state.credential_save(agent_id, region_url=reg["regional_orchestrator_url"], token=reg["token"])
        self._use_broker(reg["broker_url"])
        runtime.IDENTITY = runtime.Identity(
            agent_id=agent_id, token=reg["token"], report_key=reg["report_key"],
            region_url=reg["regional_orchestrator_url"], queues=reg["queues"],
            interval=float(reg["heartbeat_interval"]),
        )
        runtime.dead_letters_to_region()
        self.stdout.write(f"agent {agent_id} joined region {reg['region_id']} with handlers from "
                          f"{', '.join(modules)}, consuming {', '.join(reg['queues'])}")
        sys.stdout.flush()
        worker = app.Worker(
            hostname=agent_node_name(agent_id, host), queues=reg["queues"], concurrency=concurrency, pool=pool,
            loglevel=loglevel, optimization="fair",
            # Celery's monitoring (Flower, `celery events`; docs/flower.md): worker-heartbeat
            # events always, at the interval the region gave (Flower shows the agent online,
            # `control enable_events` finds a dispatcher). Task events start off here and
            # AGENT_TASK_EVENTS turns them on at worker_ready (agents.tasks), so that
            # `control disable_events` can turn them off again (it cannot in a worker
            # started with task_events on). No gossip (every worker would consume every
            # other's heartbeats: n² at fleet scale) and no mingle (a round of replies at
            # every start): neither is used.
            without_heartbeat=False, heartbeat_interval=float(reg["heartbeat_interval"]),
            task_events=False, without_gossip=True, without_mingle=True,
        )
        worker.start()
        sys.exit(worker.exitcode or 0)

    @staticmethod
    def _use_broker(url: str) -> None:
        """Consume the broker of the region this agent joined, whatever the
        environment says: Celery reads CELERY_BROKER_URL before its configuration."""
        for name in BROKER_ENV_OVERRIDES:
            os.environ.pop(name, None)
        app.conf.update(celery_options(url))

    def _discover(self, router_url, token, agent_id, caps, hint) -> tuple[str, str | None]:
        answer = self._retrying("router", lambda: RouterClient(router_url).register_agent(
            registration_token=token, agent_id=agent_id, capabilities=caps, region=hint))
        self.stdout.write(f"router sent agent {agent_id} to region {answer['region_id']} "
                          f"at {answer['regional_orchestrator_url']}")
        return answer["regional_orchestrator_url"], answer.get(REGISTRATION_GRANT)

    def _register(self, client, token, agent_id, caps, host, concurrency, declared) -> dict:
        # The credential a previous run saved proves this is the agent that holds
        # the id, even while its old entry is still online (after kill -9).
        current = state.credential_load(agent_id, region_url=client.base_url)
        return self._retrying("region", lambda: client.register(
            registration_token=token, agent_id=agent_id, capabilities=caps, version=agents.__version__,
            hostname=host, concurrency=concurrency, handlers=declared, current_token=current))

    def _retrying(self, what: str, call):
        # 409: the id is held by an agent still online, and this one has no
        # credential to prove it is that agent (lost with its state, or from a
        # run killed mid-registration). If that agent is dead, the reaper marks
        # it offline within its TTL and the id is free: wait for that.
        try:
            return runtime.retrying(call, REGISTER_PATIENCE_SECONDS, what, also=(409,), first_delay=0.5,
                                    max_delay=10.0, say=self.stderr.write)
        except runtime.URL_UNUSABLE as exc:
            # A URL that can never work: say so now, with the same exit code.
            raise CommandError(f"{what} URL is not usable: {exc}", returncode=os.EX_CONFIG) from exc
        except RegionRefused as exc:
            # Refused for good (revoked, blocklisted, bad token, too old): a
            # distinct exit code, so a supervisor does not restart it in a loop.
            raise CommandError(f"{what} refused registration ({exc.status}): {exc.detail}",
                               returncode=os.EX_CONFIG) from exc
        except runtime.RegionUnanswered as exc:
            raise CommandError(f"giving up: {exc}") from exc
