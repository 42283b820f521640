"""The fault-injection tools themselves (tests/faults.py)."""
import threading

import psycopg2
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.faults import PrivatePostgres, TcpProxy


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2, db=15,
                       retry=Retry(NoBackoff(), 0))  # fail at once: the test is about the proxy


def test_proxy_relays_redis_fails_while_cut_and_relays_again_after_restore():
    threads_before = set(threading.enumerate())
    with TcpProxy("127.0.0.1", 6379) as proxy:
        client = _client(proxy.port)
        assert client.ping() is True
        assert client.echo(b"x" * 300_000) == b"x" * 300_000  # more than one socket buffer each way
        assert proxy.open_connections == 1

        proxy.cut()
        assert proxy.open_connections == 0
        with pytest.raises(redis.ConnectionError):
            client.ping()  # the pooled connection was reset, and a reconnect is reset too
        with pytest.raises(redis.ConnectionError):
            _client(proxy.port).ping()
        assert proxy.refused >= 1

        proxy.restore()
        assert client.ping() is True  # the same client reconnects to the same port
        client.close()
    assert set(threading.enumerate()) <= threads_before  # the relay thread is gone
    with pytest.raises(redis.ConnectionError):
        _client(proxy.port).ping()  # and the port is closed


def test_proxy_to_a_dead_target_resets_the_client():
    with TcpProxy("127.0.0.1", 1) as proxy:
        with pytest.raises(redis.ConnectionError):
            _client(proxy.port).ping()


@pytest.mark.faults
def test_private_postgres_serves_stops_and_keeps_its_data_across_a_restart():
    with PrivatePostgres() as pg:
        pg.create_database("faults_tool")
        pg.execute("CREATE TABLE t (n int); INSERT INTO t VALUES (7)", dbname="faults_tool")
        pg.stop("fast")
        with pytest.raises(psycopg2.OperationalError):
            pg.connect("faults_tool")
        pg.start()
        assert pg.execute("SELECT n FROM t", dbname="faults_tool") == [(7,)]
        pg.stop("immediate")
        pg.start()
        assert pg.execute("SELECT n FROM t", dbname="faults_tool") == [(7,)]
        data_dir = pg.dir
    assert not data_dir.exists()
