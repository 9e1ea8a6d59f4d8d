"""The protocol's own parsing shortcut agrees with aiosmtpd's parser, address for address."""

from __future__ import annotations

import asyncio
import random
import string
from pathlib import Path

from aiosmtpd.smtp import SMTP

from gateway.smtp.server import GatewaySMTP, Sessions
from tests.conftest import make_settings

SAMPLES = [
    "<a@b.example>",
    "<a@b.example> SIZE=1000",
    "<a.b+c@x-y.example>  BODY=8BITMIME SMTPUTF8",
    "<A!#$%&'*+/=?^_`{|}~-@EX.COM>",
    "<>",
    "<a..b@x.example>",
    "<.a@x.example>",
    "<a@x.example.>",
    "<a@-x.example>",
    '<"q r"@x.example>',
    "<a@[127.0.0.1]>",
    "<@relay.example:a@b.example>",
    "a@b.example",
    "<a@b.example>\tSIZE=5",
    "<a @b.example>",
    "<ü@x.example>",
    "<a@xn--bcher-kva.example>",
]


def random_paths(count: int) -> list[str]:
    rng = random.Random(20170912)
    alphabet = string.ascii_letters + '.-+@_ "()'
    return [
        "<"
        + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        + "@"
        + "".join(rng.choice(string.ascii_lowercase + ".-") for _ in range(rng.randint(1, 8)))
        + ">"
        + rng.choice(["", " SIZE=1", "  X=Y", "\tZ"])
        for _ in range(count)
    ]


async def test_mail_and_rcpt_paths_parse_exactly_as_aiosmtpd_parses_them(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    settings = make_settings(tmp_path)
    ours = GatewaySMTP(None, Sessions(limit=1), settings.server, None)  # type: ignore[arg-type]
    reference = SMTP(object(), hostname="reference.example", loop=loop)
    for path in SAMPLES + random_paths(3000):
        assert ours._getaddr(path) == reference._getaddr(path), path
