"""A bare aiosmtpd server that only answers: the floor for what aiosmtpd itself costs.

    python bench/_bare.py REFUSED_ADDRESS

It refuses REFUSED_ADDRESS at RCPT with the gateway's code (550 5.1.6), takes any other
recipient, and answers 250 at the end of DATA without looking at or storing the message.
`hostname=` is set, or aiosmtpd would call socket.getfqdn() for every connection. It prints
one JSON line with its port when it listens, and one with its counts when SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

from aiosmtpd.smtp import SMTP


class _Answers:
    def __init__(self, refused: str) -> None:
        self.refused = refused
        self.refusals = 0
        self.messages = 0

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address.lower() == self.refused:
            self.refusals += 1
            return "550 5.1.6 Recipient address retired"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages += 1
        return "250 2.0.0 OK"


async def _serve(refused: str) -> None:
    loop = asyncio.get_running_loop()
    answers = _Answers(refused.lower())
    server = await loop.create_server(
        lambda: SMTP(answers, hostname="bare.bench.example", ident="ESMTP"),
        host="127.0.0.1",
        port=0,
        backlog=1024,
    )
    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    loop.add_signal_handler(signal.SIGINT, stopped.set)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"event": "bare.listening", "port": port}), flush=True)
    await stopped.wait()
    server.close()
    counts = {"refusals": answers.refusals, "messages": answers.messages}
    print(json.dumps({"event": "bare.stopped", **counts}), flush=True)


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1]))
