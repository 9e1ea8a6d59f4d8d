"""`[storage] url` and its password, `[server] node`, and `gateway migrate` on both backends."""

from __future__ import annotations

import asyncio
import itertools
import socket
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import psycopg
import pytest

from gateway.cli import main
from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.ops.checkconfig import settings_in_force
from gateway.store.backend import StoreLocation, masked
from gateway.store.schema import SCHEMA_VERSION
from tests.postgres import PostgresServer, postgres
from tests.test_serve_process import child_environment, write_config

__all__ = ["postgres"]

_databases = itertools.count(1)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://gw:s3cret@db.example:5432/gateway", "postgresql://gw:***@db.example:5432/gateway"),
        ("postgresql://gw@db.example/gateway", "postgresql://gw@db.example/gateway"),
        ("postgresql:///?service=gw", "postgresql:///?service=gw"),
        ("host=db.example password=s3cret dbname=gw", "host=db.example password=*** dbname=gw"),
        ("host=db password = 'a b' dbname=gw", "host=db password = *** dbname=gw"),
    ],
)  # fmt: skip
def test_a_url_is_shown_with_its_password_masked(url: str, shown: str) -> None:
    assert masked(url) == shown


def config_with(tmp_path: Path, storage: str) -> Path:
    path = write_config(tmp_path)
    text = path.read_text(encoding="utf-8").replace("[storage]\n", f"[storage]\n{storage}\n", 1)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_store_password_in_the_config_file_is_refused(tmp_path: Path) -> None:
    config = config_with(tmp_path, 'url = "postgresql://gw@db/gw"\npassword = "s3cret"')
    with pytest.raises(ConfigError, match="GATEWAY_STORAGE__PASSWORD") as refused:
        load_settings(config, environ={})
    assert refused.value.key == "storage.password"


def test_a_url_that_is_not_postgresql_is_refused(tmp_path: Path) -> None:
    config = config_with(tmp_path, 'url = "mysql://gw@db/gw"')
    with pytest.raises(ConfigError, match="postgresql://") as refused:
        load_settings(config, environ={})
    assert refused.value.key == "storage.url"


def test_the_password_file_goes_to_libpq_and_check_config_never_shows_it(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "pgpass"
    secret.write_text("s3cret-from-file\n", encoding="utf-8")
    config = config_with(tmp_path, 'url = "postgresql://gw@db.example/gateway"')
    settings = load_settings(config, environ={"GATEWAY_STORAGE__PASSWORD_FILE": str(secret)})
    location = StoreLocation.from_settings(settings)
    assert location.dsn is not None
    assert "password=s3cret-from-file" in location.dsn
    assert "s3cret" not in repr(location)
    assert "s3cret" not in repr(settings.storage)
    shown = "\n".join(line for _, lines in settings_in_force(settings) for line in lines)
    assert "storage.url = postgresql://gw@db.example/gateway" in shown
    assert "storage.password = (set)" in shown
    assert "s3cret" not in shown


def test_the_node_is_the_host_name_unless_named(tmp_path: Path) -> None:
    assert load_settings(write_config(tmp_path), environ={}).server.node == socket.gethostname()
    named = load_settings(write_config(tmp_path), environ={"GATEWAY_SERVER__NODE": "mx2"})
    assert named.server.node == "mx2"
    # A host that calls itself by a long FQDN (up to DNS's 253 characters) still starts.
    fqdn = ".".join(["mx-eservice-occ-chicago-primary"] * 8)[:253]
    long = load_settings(write_config(tmp_path), environ={"GATEWAY_SERVER__NODE": fqdn})
    assert long.server.node == fqdn
    with pytest.raises(ConfigError) as refused:
        load_settings(write_config(tmp_path), environ={"GATEWAY_SERVER__NODE": "mx 2"})
    assert refused.value.key == "server.node"


def migrate(config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "migrate", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_environment(**env),
        cwd=config.parent,
        check=False,
    )


def test_migrate_makes_the_sqlite_store_says_so_and_refuses_a_newer_one(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    database = tmp_path / "state" / "gateway.sqlite3"
    (tmp_path / "state").mkdir()
    made = migrate(config)
    assert made.returncode == 0, made.stderr
    assert made.stdout == f"{database}: new store created at schema version {SCHEMA_VERSION}\n"
    again = migrate(config)
    assert "already at schema version" in again.stdout
    with closing(sqlite3.connect(database)) as conn, conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    refused = migrate(config)
    assert refused.returncode == 1
    assert "its schema is version 99, newer than this gateway's" in refused.stderr
    assert "Traceback" not in refused.stderr


async def test_migrate_makes_the_postgresql_store_and_refuses_a_newer_one(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    dsn = await asyncio.to_thread(postgres.create_database, f"migrate_{next(_databases)}")
    bare = dsn.replace(f":{postgres.password}@", "@")
    config = config_with(tmp_path, f'url = "{bare}"')
    env = {"GATEWAY_STORAGE__PASSWORD": postgres.password}
    made = await asyncio.to_thread(migrate, config, **env)
    assert made.returncode == 0, made.stderr
    assert made.stdout.endswith(f": new store created at schema version {SCHEMA_VERSION}\n")
    assert postgres.password not in made.stdout + made.stderr
    again = await asyncio.to_thread(migrate, config, **env)
    assert "already at schema version" in again.stdout
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    refused = await asyncio.to_thread(migrate, config, **env)
    assert refused.returncode == 1
    assert "its schema is version 99, newer than this gateway's" in refused.stderr
    wrong = await asyncio.to_thread(migrate, config, GATEWAY_STORAGE__PASSWORD="wrong")
    assert wrong.returncode == 1
    assert "password authentication failed" in wrong.stderr
    assert "Traceback" not in wrong.stderr + refused.stderr


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["queue", "list"], "cannot open the store"),
        (["queue", "hold", "1"], "cannot open the store"),
        (["postmaster", "list"], "cannot open the store"),
    ],
)
def test_queue_and_postmaster_say_when_the_shared_store_cannot_be_reached(
    tmp_path: Path, argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as closed:  # a loopback port that nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    config = config_with(tmp_path, f'url = "postgresql://gw@127.0.0.1:{port}/gateway"')
    assert main([*argv, "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"gateway: {said}: postgresql 127.0.0.1:{port}/gateway:" in err
    assert "Traceback" not in err


async def test_queue_and_postmaster_on_a_database_with_no_store_say_so(
    postgres: PostgresServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn = await asyncio.to_thread(postgres.create_database, f"empty_{next(_databases)}")
    bare = dsn.replace(f":{postgres.password}@", "@")
    config = config_with(tmp_path, f'url = "{bare}"')
    monkeypatch.setenv("GATEWAY_STORAGE__PASSWORD", postgres.password)  # as an operator's shell
    for argv in (["queue", "list"], ["postmaster", "list"]):
        assert await asyncio.to_thread(main, [*argv, "--config", str(config)]) == 1
        err = capsys.readouterr().err
        assert "holds no gateway store yet" in err
        assert "gateway migrate` makes it" in err
        assert postgres.password not in err


@pytest.mark.parametrize(
    "argv",
    [["list"], ["show", "20170913-ABC"], ["notice", "20170913-ABC"], ["verify", "saved.log"]],
    ids=["list", "show", "notice", "verify"],
)
def test_audit_says_when_the_shared_store_cannot_be_reached(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as closed:  # a loopback port that nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    config = config_with(tmp_path, f'url = "postgresql://gw@127.0.0.1:{port}/gateway"')
    (tmp_path / "saved.log").write_text("", encoding="utf-8")
    arguments = [a if a != "saved.log" else str(tmp_path / a) for a in argv]
    assert main(["audit", *arguments, "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"cannot read the store: postgresql 127.0.0.1:{port}/gateway:" in err
    assert "Traceback" not in err


def test_the_console_may_listen_on_a_shared_store(tmp_path: Path) -> None:
    # It reads every node's records there (tests/test_audit_nodes.py serves it).
    config = config_with(tmp_path, 'url = "postgresql://gw@db.example/gateway"')
    with config.open("a", encoding="utf-8") as out:
        out.write('\n[console]\nlisten = "127.0.0.1:8099"\nusers_file = "users"\n')
    settings = load_settings(config, environ={})
    assert settings.console.listen is not None
    assert settings.storage.is_shared


def test_the_receipt_page_may_serve_from_a_shared_store(tmp_path: Path) -> None:
    config = config_with(tmp_path, 'url = "postgresql://gw@db.example/gateway"')
    with config.open("a", encoding="utf-8") as out:
        out.write('\n[lookup]\nlisten = "127.0.0.1:8099"\n')
    listen = load_settings(config, environ={}).lookup.listen
    assert listen is not None
    assert (listen.host, listen.port) == ("127.0.0.1", 8099)
