"""The PostgreSQL the site store's tests run against (tests/postgres_support.py): a real
server from Debian's package, made in a temporary folder, that keeps what was committed when
it is restarted or killed outright, which the site's exactly-once tests depend on."""

from __future__ import annotations

import pytest

from tests.e2e.browser import require
from tests.postgres_support import Postgres, postgres_missing

psycopg = pytest.importorskip("psycopg")


@pytest.fixture(scope="module")
def postgres():
    require(postgres_missing(), "PostgreSQL")
    server = Postgres().start()
    yield server
    server.remove()


def test_a_committed_row_survives_a_restart_and_a_kill_and_an_open_one_does_not(postgres):
    with psycopg.connect(postgres.dsn, autocommit=True) as connection:
        connection.execute("CREATE TABLE survivors (id int PRIMARY KEY)")
        connection.execute("INSERT INTO survivors VALUES (1)")
    postgres.restart()
    connection = psycopg.connect(postgres.dsn)
    connection.execute("INSERT INTO survivors VALUES (2)")
    connection.commit()
    connection.execute("INSERT INTO survivors VALUES (3)")  # never committed
    postgres.kill()
    with pytest.raises(psycopg.OperationalError):
        connection.execute("SELECT 1")  # the client sees the server gone
    connection.close()
    postgres.start()
    with psycopg.connect(postgres.dsn) as connection:
        ids = [row[0] for row in connection.execute("SELECT id FROM survivors ORDER BY id")]
    assert ids == [1, 2]


def test_the_server_listens_on_loopback_only(postgres):
    with psycopg.connect(postgres.dsn) as connection:
        listen = connection.execute("SHOW listen_addresses").fetchone()[0]
        port = int(connection.execute("SHOW port").fetchone()[0])
    assert (listen, port) == ("127.0.0.1", postgres.port)
