"""The test services themselves: real PostgreSQL and Redis servers that tests can restart."""

from __future__ import annotations

import psycopg
import pytest
import redis

from tests.services import PostgresServer, RedisServer

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def test_each_test_gets_an_empty_database_on_a_server_that_restarts(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    assert postgres_url.startswith(
        f"postgresql://securechat:securechat-test@127.0.0.1:{postgres_server.port}/"
    )
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (1)")
    postgres_server.stop()
    assert not postgres_server.running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres_url, connect_timeout=2)
    postgres_server.start()
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT x FROM kept").fetchall() == [(1,)]
        (listen,) = conn.execute("SHOW listen_addresses").fetchone() or ("",)
        assert listen == "127.0.0.1"


def test_redis_restarts_empty_on_the_same_port(redis_server: RedisServer, redis_url: str) -> None:
    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        client.set("k", "v")
        assert client.get("k") == b"v"
    redis_server.restart()
    assert redis_server.url == redis_url
    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        assert client.get("k") is None  # no persistence: a restart forgets everything
