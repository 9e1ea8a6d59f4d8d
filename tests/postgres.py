"""A real PostgreSQL server for tests and benchmarks: initdb in a temporary directory, on
127.0.0.1, never a mock.

`running_postgres()` is a plain context manager (bench scripts use it); the `postgres`
fixture is the same server once per test session. The cluster lives in a fresh directory:
`initdb` there, `postgres` on a free high loopback port with its unix socket in that
directory and `fsync=on` (the benchmarks measure durable commits, as the gateway needs them),
one database, and on exit `pg_ctl stop -m fast` and the directory removed, whatever happened.

PostgreSQL refuses to run as root, and the tests (like CI) run as root: the server's
commands then run as an unprivileged account, through subprocess's own setuid/setgid (no
sudo, su or runuser needed): Debian's `postgres` account when the package made one, else a
`pgtest` system account this module creates. Run by anyone else, the server runs as them.

The binaries are found with `pg_config --bindir`, else in /usr/lib/postgresql/*/bin (where
Debian keeps them, off PATH). Without them the fixture skips, except under CI=true, where
a skip would hide a missing install step in .ci/run: there it fails.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

__all__ = [
    "DATABASE",
    "SUPERUSER",
    "PostgresServer",
    "PostgresUnavailable",
    "find_bindir",
    "postgres",
    "postgres_for_tests",
    "running_postgres",
]

SUPERUSER = "gateway"
DATABASE = "gateway_test"
# The account the server runs as when we are root: Debian's, else one made for the tests.
_ACCOUNTS = ("postgres", "pgtest")
# Bounds on every server command: a start that hangs fails the test instead of the run.
_START_TIMEOUT_S = 60.0
_COMMAND_TIMEOUT_S = 60.0
# The start is tried again on a new port this many times: a free port found by binding port 0
# may be taken by another process before the postmaster binds it.
_START_TRIES = 3

StopMode = Literal["smart", "fast", "immediate"]


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server binaries are not on this machine."""


@dataclass(frozen=True, slots=True)
class _Account:
    name: str
    uid: int
    gid: int


def find_bindir() -> Path | None:
    """Where initdb, pg_ctl and postgres are: `pg_config --bindir`, else Debian's directory
    of the newest installed version; None when they are nowhere."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
        )
        if result.returncode == 0:
            candidates.append(Path(result.stdout.strip()))
    # Debian's libpq-dev ships a pg_config whose bindir is /usr/bin, which has psql but not
    # initdb; the server's own directory is under /usr/lib/postgresql/<version>/bin.
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True))
    return next(
        (c for c in candidates if (c / "initdb").is_file() and (c / "pg_ctl").is_file()), None
    )


def _version(bindir: Path) -> tuple[int, ...]:
    digits = bindir.parent.name.split(".")
    return tuple(int(d) for d in digits if d.isdigit())


class PostgresServer:
    """One PostgreSQL cluster in `root`, listening on 127.0.0.1:`port` and in `root`'s socket.

    Built and removed by `running_postgres()`; tests use `stop`, `start` and `restart` to
    take the server away under a client and bring it back on the same port and data.
    """

    def __init__(self, bindir: Path, root: Path, *, account: _Account | None) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.password = secrets.token_hex(16)
        self.port = 0
        self._account = account
        self._running = False

    @property
    def dsn(self) -> str:
        """The test database's libpq URL over TCP, with its password (scram-sha-256)."""
        return self.dsn_for(DATABASE)

    def dsn_for(self, database: str) -> str:
        """The libpq URL of `database` on this server, over TCP to 127.0.0.1."""
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        """Create the cluster: scram passwords over TCP, trust on the private unix socket."""
        # mkdtemp's 0700 keeps other users out; the server's account owns the directory.
        self.root.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._own(self.root, pwfile)
        self._run(
            "initdb",
            "--pgdata",
            str(self.data),
            "--username",
            SUPERUSER,
            "--pwfile",
            str(pwfile),
            "--auth-host=scram-sha-256",
            # The socket is in `root`, which only the server's account can enter.
            "--auth-local=trust",
            "--encoding=UTF8",
            "--locale=C",
            # The WAL and data files are fsynced on every commit (fsync=on below); initdb's
            # own fsync of the template files would only add seconds to each session.
            "--no-sync",
        )
        pwfile.unlink()

    def start(self) -> None:
        """Start the server on its port (a new free one the first time) and wait until it
        accepts connections.

        Raises:
            RuntimeError: it did not start; the message holds the end of its log.
        """
        for _ in range(_START_TRIES if self.port == 0 else 1):
            port = self.port or _free_port()
            self._configure(port)
            if self._pg_ctl("start", "-w", "-l", str(self.log), check=False).returncode == 0:
                self.port = port
                self._running = True
                return
        raise RuntimeError(f"PostgreSQL did not start:\n{self._log_tail()}")

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server: `fast` rolls back open transactions and disconnects clients;
        `immediate` is a crash (no checkpoint; recovery replays the WAL at the next start)."""
        self._pg_ctl("stop", "-w", "-m", mode)
        self._running = False

    def restart(self, *, mode: StopMode = "fast") -> None:
        """Stop and start again on the same port and data: clients lose their connections."""
        self.stop(mode)
        self.start()

    def create_database(self, name: str) -> str:
        """Create an empty database owned by the superuser; returns its DSN."""
        self._client("createdb", name)
        return self.dsn_for(name)

    def close(self) -> None:
        """Stop the server if it runs (killing it if pg_ctl cannot) and remove its directory."""
        try:
            if self._running or (self.data / "postmaster.pid").exists():
                try:
                    self.stop("fast")
                except (subprocess.SubprocessError, OSError):
                    self._kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------------

    def _configure(self, port: int) -> None:
        # In postgresql.auto.conf rather than on pg_ctl's command line, so that a restart
        # (and a start after `stop`) keeps the same settings without repeating them.
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": f"'{self.root}'",
            # Durable commits, as production runs: the benchmarks compare fsynced work.
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
            # Room for the benchmarks' 50 sessions, two pools and the claimers.
            "max_connections": "200",
            "log_min_messages": "warning",
        }
        lines = [f"{key} = {value}" for key, value in settings.items()]
        auto = self.data / "postgresql.auto.conf"
        auto.write_text("\n".join(lines) + "\n")
        self._own(auto)

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run("pg_ctl", "--pgdata", str(self.data), *args, check=check)

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one of the server's tools as the server's account."""
        command = [str(self.bindir / tool), *args]
        user = self._account
        result = subprocess.run(
            command,
            cwd=self.root,
            env=self._environment(),
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT_S,
            check=False,
            # Dropping root in the child (setgroups, setgid, setuid), as runuser would.
            user=None if user is None else user.uid,
            group=None if user is None else user.gid,
            extra_groups=None if user is None else [],
        )
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, command, result.stdout, result.stderr
            )
        return result

    def _client(self, tool: str, *args: str) -> None:
        # Over the unix socket (trust): client tools run as anyone, root included.
        where = ["-h", str(self.root), "-p", str(self.port), "-U", SUPERUSER]
        subprocess.run(
            [str(self.bindir / tool), *where, *args],
            env=self._environment(),
            capture_output=True,
            timeout=_COMMAND_TIMEOUT_S,
            check=True,
        )

    def _environment(self) -> dict[str, str]:
        # Nothing of the caller's libpq environment (PGHOST, PGSERVICE...) may redirect the
        # tools to another server; the locale is fixed so initdb's messages do not vary.
        kept = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return {**kept, "LC_ALL": "C", "LANG": "C", "HOME": str(self.root)}

    def _own(self, *paths: Path) -> None:
        if self._account is not None:
            for path in paths:
                os.chown(path, self._account.uid, self._account.gid)

    def _kill(self) -> None:
        # pg_ctl failed to stop it: signal the postmaster named in its pid file directly.
        pidfile = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, signal.SIGQUIT)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _is_alive(pid):
                time.sleep(0.05)
            if _is_alive(pid):
                os.kill(pid, signal.SIGKILL)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _server_account() -> _Account | None:
    """The unprivileged account to run the server as, when we are root; None otherwise."""
    if os.geteuid() != 0:
        return None
    for name in _ACCOUNTS:
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return _Account(name, entry.pw_uid, entry.pw_gid)
    # initdb needs a passwd entry for its uid (it names the cluster's owner after it), so a
    # bare uid is not enough: make a system account with no home and no login.
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "pgtest"],
        capture_output=True,
        timeout=_COMMAND_TIMEOUT_S,
        check=True,
    )
    entry = pwd.getpwnam("pgtest")
    return _Account("pgtest", entry.pw_uid, entry.pw_gid)


@contextlib.contextmanager
def running_postgres(*, databases: Sequence[str] = (DATABASE,)) -> Iterator[PostgresServer]:
    """A fresh PostgreSQL server with `databases` created, stopped and removed on exit.

    Raises:
        PostgresUnavailable: the server's binaries are not installed.
        RuntimeError: the server did not start.
    """
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable(
            "PostgreSQL's server is not installed (apt-get install postgresql):"
            " no initdb from `pg_config --bindir` nor in /usr/lib/postgresql/*/bin"
        )
    account = _server_account()
    root = Path(tempfile.mkdtemp(prefix="pgtest-"))
    server = PostgresServer(bindir, root, account=account)
    try:
        server.init()
        server.start()
        for name in databases:
            server.create_database(name)
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def postgres_for_tests() -> Iterator[PostgresServer]:
    """`running_postgres()`, or the test skipped (failed under CI=true) without binaries."""
    try:
        with running_postgres() as server:
            yield server
    except PostgresUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{exc}; CI must install it (.ci/run)")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole test session (see the module's docstring)."""
    with postgres_for_tests() as server:
        yield server
