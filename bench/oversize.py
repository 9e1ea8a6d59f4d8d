"""Memory and time of oversize filings: the gateway reads them to the end and keeps only the head.

Starts `gateway serve` (built-in config, a temporary state_dir, `max_message_size` at its
default 25 MiB) and sends it, over loopback, messages of growing size: under the limit, at
four times the limit and at sixteen times. For each it prints the reply, the seconds DATA
took, and the serving process's peak resident memory (VmHWM) so far. Past the limit the data
is discarded as it arrives, so the peak must stay near that of the largest message under
the limit, however large the oversize one. Bounded: three messages, a timeout on each.

    .venv/bin/python bench/oversize.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from receive import AS_OF, REPO, RETIRED, SENDER, start_server

LIMIT = 26214400
SIZES = (LIMIT // 2, LIMIT * 4, LIMIT * 16)
CHUNK = b"x" * 998 + b"\r\n"
TIMEOUT = 300.0


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def send(port: int, size: int) -> tuple[str, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> str:
        line = b""
        while True:
            line = await reader.readline()
            if line[3:4] != b"-":
                return line.decode().strip()

    await reply()
    for command in ("EHLO bench.example", f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{RETIRED}>", "DATA"):
        writer.write(command.encode() + b"\r\n")
        await reply()
    started = time.perf_counter()
    writer.write(b"From: <attorney@lawfirm.example>\r\nSubject: Brief A123456789\r\n\r\n")
    for _ in range(size // len(CHUNK)):
        writer.write(CHUNK)
        await writer.drain()
    writer.write(b".\r\n")
    answer = await reply()
    elapsed = time.perf_counter() - started
    writer.write(b"QUIT\r\n")
    writer.close()
    return answer, elapsed


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="oversize-bench-") as work:
        state = Path(work) / "state"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(
            {
                "GATEWAY_SERVER__LISTEN": "127.0.0.1:0",
                "GATEWAY_STORAGE__STATE_DIR": str(state),
                "GATEWAY_DELIVERY__OUTBOX_DIR": str(state / "notices"),
                "GATEWAY_METRICS__LISTEN": "",
            }
        )
        server = start_server(
            "gateway",
            [sys.executable, "-m", "gateway", "serve", "--as-of", AS_OF],
            ready_event="gateway.listening",
            log_path=Path(work) / "gateway.log",
            env=env,
            cwd=REPO,
        )
        try:
            print(
                f"max_message_size {LIMIT / 2**20:.0f} MiB; start: peak RSS "
                f"{peak_rss_mib(server.process.pid):.0f} MiB"
            )
            print(f"{'message':>10}  {'seconds':>8}  {'MiB/s':>7}  {'peak RSS MiB':>12}  reply")
            for size in SIZES:
                answer, elapsed = asyncio.run(asyncio.wait_for(send(server.port, size), TIMEOUT))
                rate = size / 2**20 / elapsed
                peak = peak_rss_mib(server.process.pid)
                print(
                    f"{size / 2**20:>7.0f} MiB  {elapsed:>8.2f}  {rate:>7.0f}  {peak:>12.0f}  "
                    f"{answer[:60]}"
                )
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
