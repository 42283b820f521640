"""Completion callbacks (docs/api.md, docs/security.md): the caller's signing
secret (secret.py), the SSRF guard (guard.py) and the delivery outbox
(deliver.py)."""
