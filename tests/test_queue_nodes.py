"""`gateway queue` and `gateway postmaster` on a shared store, end to end: two `gateway serve`
processes (mx1, mx2) on one database of the tests' PostgreSQL deliver to a real recording
sink, and an operator runs the commands as processes from either node's host while one
node's attempt at a job is under way."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.polling import eventually
from tests.postgres import PostgresServer, postgres
from tests.sink import start_sink
from tests.test_queue_tools import Run, gateway_cli
from tests.test_serve_process import (
    AFTER_CUTOFF,
    RETIRED,
    SENDER,
    Attempt,
    send,
    serving,
    smtp_session,
)
from tests.test_two_nodes import node_config, password_env, shared_database

__all__ = ["postgres"]

GREYLISTED = "451 4.3.0 Greylisted, try again"
POSTMASTER = "postmaster@occ-chicago.example"


async def gateway(config: Path, server: PostgresServer, *args: str) -> Run:
    """`gateway ARGS` as an operator on that node runs it (the store's password in the
    environment), without blocking the loop the sink answers on."""
    return await gateway_cli(config, *args, env=password_env(server))


def field(shown: str, name: str) -> str:
    """A field of `gateway queue show`'s output ("         state: held" -> "held")."""
    return next(
        line.split(": ", 1)[1] for line in shown.splitlines() if line.strip().startswith(f"{name}:")
    )


async def test_an_operator_holds_a_job_in_flight_on_another_node_and_releases_it(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = await shared_database(postgres)
    # The first DATA hangs until the operator has acted, so the notice is in flight on mx1
    # meanwhile, and then answers 451: were the job not held, it would be due again in half
    # a second (node_config's retry_schedule), from either node.
    sink = await start_sink(replies=[GREYLISTED])
    answer = sink.stall_until = asyncio.Event()
    first = node_config(tmp_path, "mx1", url=url, sink=sink)
    second = node_config(tmp_path, "mx2", url=url, sink=sink)
    env = password_env(postgres)
    try:
        async with serving(first, as_of=AFTER_CUTOFF, env=env) as one:
            async with smtp_session(one.port) as client:
                refused = await send(client, Attempt(1, SENDER, RETIRED))
            await eventually(lambda: sink.attempts == 1, within=20)
            # mx1 has the notice's attempt out; mx2 starts, and its operator acts on the job.
            async with serving(second, as_of=AFTER_CUTOFF, env=env) as two:
                async with smtp_session(two.port) as client:
                    kept = await send(client, Attempt(2, SENDER, POSTMASTER))
                listed = await gateway(second, postgres, "queue", "list")
                deleted = await gateway(second, postgres, "queue", "delete", "1")
                held = await gateway(second, postgres, "queue", "hold", "1")
                answer.set()
                # The attempt under way finishes (deferred) and the job stays held.
                shown = await eventually_shown(second, postgres, attempts="1")
                # Absence can only be shown by waiting: many polls (0.05 s) of both nodes.
                await asyncio.sleep(3.0)
                while_held = (sink.attempts, field(await show(first, postgres), "state"))
                released = await gateway(first, postgres, "queue", "release", "1")
                await sink.wait_for(1, within=20)
                done = await eventually_shown(first, postgres, state="delivered")
                sent = await gateway(second, postgres, "queue", "show-message", "1")
                mailbox = await gateway(first, postgres, "postmaster", "list")
                await eventually(
                    lambda: any(s.gateway.find("outbox.released") for s in (one, two)), within=20
                )
                assert await two.gateway.stop() == 0
            assert await one.gateway.stop() == 0
            logged = [
                (node, event)
                for node, served in (("mx1", one), ("mx2", two))
                for event in served.gateway.named("outbox.held")
            ]
    finally:
        answer.set()
        sink.close()

    assert (refused.code, kept.code) == (550, 250)
    assert listed.code == 0, listed.err
    header, row = listed.out.splitlines()[:2]
    assert row[header.index(" NODE ") + 1 :].split()[0] == "mx1"  # it took the filing
    assert row[header.index(" LEASE ") + 1 :].split()[0] == "mx1"  # and its attempt is out
    assert row.split()[1] == "in-flight"
    assert deleted.code == 1
    assert "job 1 not deleted: its attempt is under way on mx1" in deleted.err
    assert held.out == "job 1: held (not sent until released)\n"
    assert field(shown, "state") == "held"
    (tried,) = [line for line in shown.splitlines() if line.startswith("  attempt 1:")]
    assert " deferred   by mx1  " in tried
    assert while_held == (1, "held")
    assert released.out == "job 1: released\n"
    assert field(done, "queued on") == "mx1"
    (notice,) = sink.accepted
    assert SENDER in notice.recipients
    # As it was sent, kept in the shared store by the node that sent it, byte for byte.
    assert sent.code == 0, sent.err
    assert sent.out.encode() == notice.data
    # Logged once, by whichever node took the journalled action, naming the operator.
    ((node, event),) = logged
    assert node in ("mx1", "mx2")
    assert (event["jobs"], event["filter"], event["node"]) == ([1], {"ids": [1]}, node)
    assert event["operator"]
    # Mail to postmaster through mx2 is listed from mx1's host.
    assert mailbox.code == 0, mailbox.err
    (mail,) = mailbox.out.splitlines()[1:]
    assert SENDER in mail.split()
    assert postgres.password not in listed.out + listed.err + mailbox.out + deleted.err


async def show(config: Path, server: PostgresServer) -> str:
    run = await gateway(config, server, "queue", "show", "1")
    assert run.code == 0, run.err
    return run.out


async def eventually_shown(config: Path, server: PostgresServer, **wanted: str) -> str:
    """`gateway queue show 1`'s output once its fields say what `wanted` says."""
    for _ in range(100):
        shown = await show(config, server)
        if all(field(shown, name) == value for name, value in wanted.items()):
            return shown
        await asyncio.sleep(0.2)
    raise AssertionError(f"job 1 never showed {wanted}: {shown}")
