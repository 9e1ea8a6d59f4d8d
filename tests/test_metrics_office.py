"""Per-office message and refusal counters, and no `*_created` series, scraped from a real
`gateway serve` process after real SMTP mail (issue 11, item 12)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.test_metrics import (
    fetch,
    metrics_config,
    metrics_url,
    refused_rcpt,
    scrape,
    value,
)
from tests.test_serve_process import (
    AFTER_CUTOFF,
    CHICAGO_OFFICE,
    LATER,
    LATER_OFFICE,
    RETIRED,
    SENDER,
    Attempt,
    send,
    serving,
    smtp_session,
)

MESSAGES = "gateway_smtp_messages_total"
REFUSED = "gateway_smtp_messages_refused_total"
RCPT_REFUSED = "gateway_smtp_recipients_refused_total"


async def test_message_and_refusal_counters_are_labelled_with_the_office(
    tmp_path: Path,
) -> None:
    config = metrics_config(tmp_path)
    async with serving(config, as_of=AFTER_CUTOFF) as served:
        base = metrics_url(served.gateway)
        before = await scrape(base)
        async with smtp_session(served.port) as client, asyncio.timeout(30):
            for n in (1, 2):
                assert (await send(client, Attempt(n, SENDER, RETIRED))).code == 550
            assert (await send(client, Attempt(3, SENDER, LATER))).code == 250
            await client.mail(SENDER)
            assert await refused_rcpt(client, "nobody@occ-chicago.example") == 550
            assert await refused_rcpt(client, "someone@elsewhere.example") == 554
            await client.quit()
        after = await scrape(base)
        assert await served.gateway.stop() == 0

    # Every configured office's message series is there from the start, at 0.
    for office in (CHICAGO_OFFICE, LATER_OFFICE):
        assert value(before, MESSAGES, outcome="rejected", office=office) == 0
    assert value(after, MESSAGES, outcome="rejected", office=CHICAGO_OFFICE) == 2
    assert value(after, MESSAGES, outcome="rejected", office=LATER_OFFICE) == 0
    assert value(after, MESSAGES, outcome="accepted", office=LATER_OFFICE) == 1
    assert value(after, MESSAGES, outcome="accepted", office=CHICAGO_OFFICE) == 0
    assert value(after, REFUSED, reason="address-retired", office=CHICAGO_OFFICE) == 2
    # A mailbox at an office's domain is that office's refusal; a stranger's domain is none's.
    assert value(after, RCPT_REFUSED, reason="no-such-mailbox", office=CHICAGO_OFFICE) == 1
    assert value(after, RCPT_REFUSED, reason="relay-denied", office="") == 1


async def test_metrics_have_no_created_series(tmp_path: Path) -> None:
    config = metrics_config(tmp_path)
    async with serving(config, as_of=AFTER_CUTOFF) as served:
        base = metrics_url(served.gateway)
        async with smtp_session(served.port) as client, asyncio.timeout(30):
            await send(client, Attempt(1, SENDER, RETIRED))
            await client.quit()
        status, _, text = await fetch(f"{base}/metrics")
        assert await served.gateway.stop() == 0

    assert status == 200
    assert "gateway_smtp_messages_total{" in text  # counters are there ...
    assert "gateway_delivery_duration_seconds_bucket{" in text
    assert [line for line in text.splitlines() if "_created" in line] == []  # ... with no twin
