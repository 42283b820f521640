"""Contenders started at once against the real database, for tests that a
conditional UPDATE lets exactly one of them win."""
from __future__ import annotations

import threading
from typing import Callable

from django.db import connection

from project.exceptions import Refused


def race(contenders: int, attempt: Callable[[int], object]) -> tuple[list, list[Refused]]:
    """Run attempt(0) … attempt(contenders - 1) in threads released together;
    their results and their refusals (anything else fails the test). Each
    thread closes its own database connection."""
    start = threading.Barrier(contenders)
    won, refused, failed = [], [], []

    def contend(i: int) -> None:
        try:
            start.wait()
            won.append(attempt(i))
        except Refused as exc:
            refused.append(exc)
        except Exception as exc:  # reported below
            failed.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failed, failed
    return won, refused
