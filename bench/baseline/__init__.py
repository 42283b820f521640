"""The stack a team would otherwise build for "run this task and keep its result",
as a reference for bench/tasks.py: a DRF view calling apply_async, a Celery
worker, django-celery-results storing each result in PostgreSQL. Celery's Django
example (celery.py loaded here), DRF's token auth, every other setting default."""
from .celery import app as celery_app

__all__ = ("celery_app",)
