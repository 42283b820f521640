from django.core.management.base import BaseCommand

from project.accounts.assertions import keypair_generate


class Command(BaseCommand):
    help = ("Make a new Ed25519 key pair for the router's assertions: ROUTER_SIGNING_KEY for the router, "
            "the public half for every region's ROUTER_PUBLIC_KEYS (docs/security.md, key rotation).")

    def add_arguments(self, parser):
        parser.add_argument("--env", action="store_true", help="print as two NAME=value lines")

    def handle(self, *args, env, **options):
        private, public = keypair_generate()
        if env:
            self.stdout.write(f"ROUTER_SIGNING_KEY={private}\nROUTER_PUBLIC_KEYS={public}")
        else:
            self.stdout.write(f"private (router, ROUTER_SIGNING_KEY): {private}\n"
                              f"public (regions, ROUTER_PUBLIC_KEYS): {public}")
