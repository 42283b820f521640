"""Create N agents at once (load simulation and benchmarks) and write their tokens."""
import json

from django.core.management.base import BaseCommand
from django.utils import timezone

from project.accounts.tokens import token_generate, token_hash
from regions.models import Agent
from regions.services import liveness


class Command(BaseCommand):
    help = "Bulk-create simulated agents; writes [[agent_id, token], ...] as JSON to --tokens-out."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=1000)
        parser.add_argument("--prefix", default="sim")
        parser.add_argument("--capabilities", default="echo")
        parser.add_argument("--tokens-out", required=True)

    def handle(self, *args, count, prefix, capabilities, tokens_out, **options):
        caps = capabilities.split(",")
        now = timezone.now()
        pairs, rows = [], []
        for i in range(count):
            agent_id, raw = f"{prefix}-{i:06d}", token_generate("mat")
            pairs.append((agent_id, raw))
            rows.append(Agent(agent_id=agent_id, capabilities=caps, kind="http", token_hash=token_hash(raw),
                              last_seen=now))
        Agent.objects.bulk_create(rows, batch_size=5000)
        pipe = liveness.client().pipeline(transaction=False)
        for agent_id, raw in pairs:
            pipe.hset(liveness.key("tok"), agent_id, token_hash(raw))
            pipe.zadd(liveness.key("live"), {agent_id: now.timestamp()})
        pipe.execute()
        with open(tokens_out, "w") as fh:
            json.dump(pairs, fh)
        self.stdout.write(f"{count} agents created")
