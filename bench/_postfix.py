"""Postfix from Debian's package, unpacked (never installed), run from a temporary directory.

`apt-get download postfix` and `dpkg -x` put the binaries under the cache directory; each
benchmark run writes a main.cf and master.cf of its own into a temporary directory and runs
`master -d` (in the foreground) on them, so nothing on the machine is configured or left
running. Two things make that work without installing the package:

* the binaries look for their shared libraries in /usr/lib/postfix, which is not there, so
  LD_LIBRARY_PATH points into the unpacked tree, and `import_environment` passes it on to the
  daemons that master starts (master clears every other variable);
* Postfix refuses to run its daemons as root (`mail_owner` must be an unprivileged user), so
  a `postfix` user and `postdrop` group are created if missing (`ensure_accounts`).

The instance is a retired-address MX: mail to the retired address is refused at RCPT with
`relocated_maps` (550 5.1.6 "User has moved"); mail to any other address at the domain is
accepted into Postfix's durable queue (cleanup fsyncs the queue file before smtpd says 250)
and then discarded by qmgr, so the DATA rounds measure a durable accept. The error tarpit is
off (`smtpd_error_sleep_time = 0`, the error limits raised) so that refusals over reused
connections are not slowed down on purpose.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Postfix", "ensure_accounts", "fetch", "free_port", "start_postfix", "start_sink"]

_QUEUE_DIRS = (
    "active",
    "bounce",
    "corrupt",
    "defer",
    "deferred",
    "flush",
    "hold",
    "incoming",
    "private",
    "saved",
    "trace",
)


@dataclass(frozen=True, slots=True)
class Postfix:
    """The unpacked package: where its daemons, commands and libraries are."""

    root: Path

    @property
    def daemons(self) -> Path:
        return self.root / "usr" / "lib" / "postfix" / "sbin"

    @property
    def commands(self) -> Path:
        return self.root / "usr" / "sbin"

    @property
    def libraries(self) -> Path:
        return self.root / "usr" / "lib" / "postfix"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAIL_")}
        env["LD_LIBRARY_PATH"] = str(self.libraries)
        return env


def fetch(cache: Path) -> Postfix:
    """The unpacked postfix package under `cache`, downloaded and unpacked the first time.

    Raises:
        RuntimeError: apt-get or dpkg failed, or produced no smtpd.
    """
    postfix = Postfix(cache / "postfix")
    if (postfix.daemons / "smtpd").is_file():
        return postfix
    download = cache / "download"
    download.mkdir(parents=True, exist_ok=True)
    print(f"fetching Debian's postfix package into {cache}", file=sys.stderr, flush=True)
    for argv, cwd in (
        (["apt-get", "download", "postfix"], download),
        (
            [
                "dpkg",
                "-x",
                *map(str, sorted(download.glob("postfix_*.deb"))[-1:]),
                str(postfix.root),
            ],
            None,
        ),
    ):
        result = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=300, check=False)
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({result.returncode}): {detail}")
    if not (postfix.daemons / "smtpd").is_file():
        raise RuntimeError(f"the postfix package unpacked into {postfix.root} has no smtpd")
    return postfix


def ensure_accounts() -> None:
    """Create the `postfix` user and the `postdrop` group Postfix's daemons need, if missing.

    Raises:
        RuntimeError: they are missing and could not be created (not root, no useradd).
    """
    commands = [
        (["getent", "group", "postdrop"], ["groupadd", "--system", "postdrop"]),
        (["getent", "group", "postfix"], ["groupadd", "--system", "postfix"]),
        (
            ["getent", "passwd", "postfix"],
            [
                "useradd",
                "--system",
                "--gid",
                "postfix",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "postfix",
            ],
        ),
    ]
    for check, create in commands:
        if subprocess.run(check, capture_output=True, check=False).returncode == 0:
            continue
        result = subprocess.run(create, capture_output=True, timeout=30, check=False)
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"{' '.join(create)} failed: {detail}")


def free_port() -> int:
    """A loopback port free a moment ago (Postfix and smtp-sink cannot bind port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _main_cf(postfix: Postfix, home: Path, *, domain: str) -> str:
    return f"""\
compatibility_level = 3.6
queue_directory = {home / "queue"}
data_directory = {home / "data"}
daemon_directory = {postfix.daemons}
command_directory = {postfix.commands}
shlib_directory = {postfix.libraries}
meta_directory = {home / "conf"}
mail_owner = postfix
setgid_group = postdrop
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C
    LD_LIBRARY_PATH={postfix.libraries}
maillog_file = {home / "maillog"}
# Postfix writes its log only under these (default: /var, /dev/stdout).
maillog_file_prefixes = {home}
myhostname = postfix.bench.example
mydomain = bench.example
mydestination = {domain}
mynetworks = 127.0.0.0/8
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
alias_maps =
alias_database =
local_recipient_maps =
relocated_maps = texthash:{home / "conf" / "relocated"}
local_transport = discard:
default_transport = discard:
relay_transport = discard:
fast_flush_domains =
biff = no
smtputf8_enable = no
message_size_limit = 26214400
smtpd_banner = $myhostname ESMTP
# The tarpit: off, or refusals over reused connections measure Postfix's sleeps.
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000000
smtpd_hard_error_limit = 1000000
smtpd_junk_command_limit = 1000000
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
# 1,000 idle connections are 1,000 smtpd processes.
default_process_limit = 1200
# An smtpd left idle (after the memory row's 1,000 connections) exits after 10 s rather than
# the default 100 s, so that it does not linger into the next rows; a busy one never idles.
max_idle = 10s
"""


def _master_cf(port: int) -> str:
    # service type private unpriv chroot wakeup maxproc command
    return f"""\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
discard   unix  - - n - - discard
error     unix  - - n - - error
retry     unix  - - n - - error
postlog   unix-dgram n - n - 1 postlogd
"""


def _prepare(postfix: Postfix, home: Path, *, port: int, retired: str, domain: str) -> None:
    conf = home / "conf"
    queue = home / "queue"
    for path in (conf, queue, home / "data"):
        path.mkdir(parents=True, exist_ok=True)
    (conf / "main.cf").write_text(_main_cf(postfix, home, domain=domain))
    (conf / "master.cf").write_text(_master_cf(port))
    (conf / "relocated").write_text(f"{retired} the eService portal\n")
    # Daemons drop to mail_owner: the queue and data directories must be theirs, and the
    # temporary directory (0700 from mkdtemp) readable on the way down to them.
    home.chmod(0o755)
    for name in _QUEUE_DIRS:
        (queue / name).mkdir(exist_ok=True)
    (queue / "pid").mkdir(exist_ok=True)
    for name in ("maildrop", "public"):
        (queue / name).mkdir(exist_ok=True)
    shutil.chown(home / "data", "postfix", "postfix")
    for name in _QUEUE_DIRS:
        shutil.chown(queue / name, "postfix", "root")
        (queue / name).chmod(0o700)
    for name in ("maildrop", "public"):
        shutil.chown(queue / name, "postfix", "postdrop")
        (queue / name).chmod(0o730 if name == "maildrop" else 0o710)


def start_postfix(
    postfix: Postfix, home: Path, *, retired: str, domain: str, timeout: float = 30.0
) -> tuple[subprocess.Popen[bytes], int]:
    """Start master (foreground) with smtpd on a free loopback port; returns it and the port
    once the port answers.

    Raises:
        RuntimeError: master exited, or the port did not answer within `timeout` seconds.
    """
    port = free_port()
    _prepare(postfix, home, port=port, retired=retired, domain=domain)
    argv = [str(postfix.daemons / "master"), "-d", "-c", str(home / "conf")]
    with (home / "master.stderr").open("wb") as stderr:
        process = subprocess.Popen(
            argv,
            env=postfix.env(),
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,
        )
    _wait_for_port(process, port, timeout=timeout, what=f"postfix master ({home / 'maillog'})")
    return process, port


def start_sink(
    postfix: Postfix, home: Path, *, timeout: float = 30.0
) -> tuple[subprocess.Popen[bytes], int]:
    """Start Postfix's smtp-sink (C: accepts and discards) on a free loopback port.

    Raises:
        RuntimeError: it exited, or its port did not answer within `timeout` seconds.
    """
    port = free_port()
    # -u: as root it insists on dropping to another user once it has its socket.
    argv = [str(postfix.commands / "smtp-sink"), "-u", "nobody", f"127.0.0.1:{port}", "1024"]
    with (home / "smtp-sink.stderr").open("wb") as stderr:
        process = subprocess.Popen(
            argv,
            env=postfix.env(),
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,
        )
    _wait_for_port(process, port, timeout=timeout, what="smtp-sink")
    return process, port


def _wait_for_port(
    process: subprocess.Popen[bytes], port: int, *, timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
                conn.settimeout(5.0)
                if conn.recv(512).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.1)
    stop_process(process)
    raise RuntimeError(f"{what} did not answer on port {port} within {timeout:.0f} s")


def stop_process(process: subprocess.Popen[bytes], *, timeout: float = 20.0) -> int:
    """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=timeout)
