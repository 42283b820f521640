"""The fast tier's safety net (tests/conftest.py): this test is marked with no
slow tier (pytest.ini), so every way the harness starts a real process fails it,
before anything is started."""
import pytest

from tests import harness
from tests.faults import PrivatePostgres

NOT_MARKED = "test_tiers.py::test_an_unmarked_test_fails_when_it_starts_a_real_process .* is not marked integration"


def test_an_unmarked_test_fails_when_it_starts_a_real_process(tmp_path):
    for start in (harness.Template, lambda: harness.Region(None), lambda: harness.RedisServer(tmp_path),
                  lambda: harness.Proc("web", ["true"], {}, tmp_path / "web.log"), PrivatePostgres):
        with pytest.raises(pytest.fail.Exception, match=NOT_MARKED):
            start()
    assert list(tmp_path.iterdir()) == []  # nothing started, not even a log
