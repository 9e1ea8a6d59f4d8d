"""Workers forked from the supervisor, so that they share its imported code's memory.

Each interpreter of a host holds some 70 MiB of imported modules (pydantic, structlog,
aiohttp, cryptography, jinja2...) before it serves a connection. Workers started with
`python -m gateway serve --worker-index I` each import all of that again. A worker forked
from the supervisor once it has imported everything shares those pages with it, copy on
write: bench/shared_imports.py measured 153 MiB PSS for three processes importing each, 61
MiB for one that imported and two forked from it after `gc.freeze()` (without the freeze,
the collector's writes to the inherited objects' headers copy most pages back: 106 MiB).

Forking is safe only while the process has one thread and no event loop: a lock another
thread holds at the fork stays held in the child for ever, and an inherited loop shares its
selector with the parent. So the supervisor forks its first workers before it opens its log
or starts anything else (`fork_worker` refuses otherwise, and the caller starts that worker
as a new interpreter instead). A forked worker waits, doing nothing, until the supervisor
releases it at the moment it would have started it (`ForkedProcess.release`), so the order
of a start is as before: the supervisor's log, the store's migration, then the workers. A
worker restarted later, when the supervisor runs its loop and threads, is always a new
interpreter.

A forked worker runs exactly what the started one runs, the command line's `main(argv)`
with the same arguments (passed in: this module sits below the command line). What a new
interpreter would get afresh is set up here: its own process group, default signal
handlers, stdin from /dev/null, none of the descriptors the supervisor itself inherited
(subprocess's `close_fds`), and prometheus_client's multiprocess mode, which is chosen from
the environment at import.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import gc
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence

__all__ = ["ForkedProcess", "Main", "can_fork", "fork_worker", "freeze_for_fork"]

# The command line's entry point: the gateway's arguments in, the exit status out.
Main = Callable[[Sequence[str]], int]
# Signals a worker must meet with their default action until its event loop takes them.
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)


def can_fork() -> bool:
    """Whether this process may fork a worker now: it has one thread."""
    return threading.active_count() == 1


def freeze_for_fork() -> None:
    """Collect once, then keep the collector off every object that exists now, in this
    process and in the children forked from it, so that their pages stay shared."""
    gc.collect()
    gc.freeze()


def fork_worker(
    main: Main,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    pass_fds: Sequence[int],
    close_fds: Sequence[int],
) -> ForkedProcess | None:
    """Fork a child that, once released, runs `main(argv)` (the `gateway` command) and ends
    with its exit status; None when this process may not fork (see `can_fork`).

    `pass_fds` are the inheritable descriptors it keeps (the listening sockets), as with
    subprocess; `close_fds` those of this process it must not keep (the other workers'
    pipes). Both, and the child's own ready pipe, are named in `argv`.
    """
    if not can_fork():
        return None
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - coverage restarts in the child from its next call on
        os.close(go_write)
        inherited = [fd for fd in _inherited_fds() if fd not in pass_fds]
        _run_child(main, list(argv), env, [*close_fds, *inherited], go=go_read)
    os.close(go_read)
    with contextlib.suppress(PermissionError, ProcessLookupError):
        os.setpgid(pid, pid)  # as the child does: whichever runs first
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # a kernel before 5.3: the child, never released, ends by itself
        os.close(go_write)
        os.waitpid(pid, 0)
        return None
    return ForkedProcess(pid, go=go_write, pidfd=pidfd)


def _run_child(
    main: Main, argv: list[str], env: Mapping[str, str], close_fds: list[int], *, go: int
) -> None:
    """Become the worker once released: never returns, and never unwinds into the
    supervisor's frames (their `finally` blocks remove the run directory and close the
    listeners)."""
    status = 1
    try:
        os.setpgid(0, 0)  # a group of its own, as the started workers' process_group=0
        for signum in _SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        for fd in close_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        released = os.read(go, 1)
        os.close(go)
        if not released:  # the supervisor gave up on this worker, or is gone
            status = 0
            return
        os.environ.update(env)
        _choose_metric_values()
        status = main(argv)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        # What an interpreter does on its way out (the worker's own handlers, and coverage's
        # under the tests), then out without unwinding.
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()  # coverage saves its data here, under the tests
            sys.stdout.flush()  # pragma: no cover - after coverage has saved
            sys.stderr.flush()  # pragma: no cover
        os._exit(status)  # pragma: no cover


def _inherited_fds() -> list[int]:
    """Descriptors beyond 0-2 that are not close-on-exec, as every descriptor Python opens
    is: the supervisor's listeners, and what it got from whoever started it. A new
    interpreter gets only those passed (subprocess closes the rest); the supervisor's own
    stay open in a forked child, unused, with the objects that own them (closing one under
    its object could later close a reused number)."""
    fds = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            if fd > 2 and not fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                fds.append(fd)
    return fds


def _choose_metric_values() -> None:
    # prometheus_client picks its value class from PROMETHEUS_MULTIPROC_DIR when it is
    # first imported, which was in the supervisor, before that variable was set.
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


class ForkedProcess:
    """A forked worker as the supervisor steers it: asyncio.subprocess.Process's `pid`,
    `returncode`, `wait()`, `send_signal()` and `kill()`, through a pidfd, so that a signal
    never reaches a later process that reused the pid."""

    def __init__(self, pid: int, *, go: int, pidfd: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.go = go  # the pipe that releases it; -1 once released or abandoned
        self._pidfd = pidfd
        self._ended: asyncio.Future[int] | None = None

    @property
    def fds(self) -> tuple[int, ...]:
        """This process's descriptors for the child, which no other child must keep."""
        return (self._pidfd,) if self.go == -1 else (self.go, self._pidfd)

    def release(self) -> None:
        """Let the waiting child start serving."""
        try:
            os.write(self.go, b"g")
        finally:
            self._close_go()

    def abandon(self) -> None:
        """Tell a child that was never released to end, and reap it (it ends at once)."""
        if self.go == -1:
            return
        self._close_go()
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        os.close(self._pidfd)

    def _close_go(self) -> None:
        os.close(self.go)
        self.go = -1

    async def wait(self) -> int:
        """Wait for the process to end and reap it; its exit status (negative: the signal
        that ended it), as asyncio's Process.wait gives it."""
        if self.returncode is not None:
            return self.returncode
        if self._ended is None:
            loop = asyncio.get_running_loop()
            self._ended = loop.create_future()
            loop.add_reader(self._pidfd, self._reap, loop)
        return await asyncio.shield(self._ended)

    def _reap(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.remove_reader(self._pidfd)
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        os.close(self._pidfd)
        assert self._ended is not None
        self._ended.set_result(self.returncode)

    def send_signal(self, signum: int) -> None:
        if self.returncode is not None:
            raise ProcessLookupError(self.pid)
        signal.pidfd_send_signal(self._pidfd, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
