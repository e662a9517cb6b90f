"""The UDP load of ``crdtstream bench agent``: a realistic statsd mix, sent open loop.

``python -m bench._loadgen --port P --rate DATAGRAMS_PER_S --seconds S --shape multi|single
--dialect dogstatsd|etsy|collectd --seed N`` prints one JSON line at the end: datagrams and
lines sent and the seconds it took. The datagrams are built before the clock starts and sent
from a connected socket in a tight loop, in small bursts that keep the offered rate whatever
the receiver does (open loop: a slow receiver is never waited for).

The mix: about 10,000 keys (40 metric names x 5 kinds x 50 hosts, two tags each); 40 %
counters, 15 % gauges, 20 % timers, 10 % sets, 15 % distributions. Dialects: ``dogstatsd``
as written;
``etsy`` sends distributions as timers (``|d`` is DogStatsD's); ``collectd`` also folds the
tags into the name (its statsd plugin rejects tags).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import socket
import time
from collections.abc import Sequence

__all__ = ["DATAGRAM_BYTES", "build_datagrams", "main", "mixed_line"]

DATAGRAM_BYTES = 1_400
NAMES = 40
HOSTS = 50
BURST_S = 0.001
"""How often the sender catches up with the schedule: bursts of about a millisecond's worth."""


def mixed_line(chooser: random.Random, dialect: str) -> str:
    """One statsd line of the standard mix in ``dialect``."""
    metric = f"app.m{chooser.randrange(NAMES)}"
    host = chooser.randrange(HOSTS)
    env = "prod" if host % 3 else "staging"
    draw = chooser.random()
    if draw < 0.40:
        body = ("count", "1|c")
    elif draw < 0.55:
        body = ("level", f"{chooser.randrange(1000)}|g")
    elif draw < 0.75:
        body = ("latency", f"{chooser.uniform(0, 500):.2f}|ms")
    elif draw < 0.85:
        body = ("users", f"u{chooser.randrange(5_000)}|s")
    else:
        body = (
            "size",
            f"{chooser.randrange(1, 100_000)}|{'ms' if dialect != 'dogstatsd' else 'd'}",
        )
    name = f"{metric}.{body[0]}"
    if dialect == "collectd":
        return f"{name}.env_{env}.host_h{host}:{body[1]}"
    return f"{name}:{body[1]}|#env:{env},host:h{host}"


def build_datagrams(shape: str, dialect: str, seed: int, count: int) -> list[bytes]:
    """``count`` datagrams: one line each (``single``) or lines up to 1,400 bytes (``multi``)."""
    chooser = random.Random(seed)
    datagrams = []
    for _ in range(count):
        if shape == "single":
            datagrams.append(mixed_line(chooser, dialect).encode())
            continue
        lines: list[str] = []
        size = 0
        while True:
            line = mixed_line(chooser, dialect)
            if lines and size + len(line) + 1 > DATAGRAM_BYTES:
                break
            lines.append(line)
            size += len(line) + 1
        datagrams.append("\n".join(lines).encode())
    return datagrams


def _send(port: int, datagrams: Sequence[bytes], rate: float, seconds: float) -> int:
    """Send ``datagrams`` (cycled) at ``rate`` per second for ``seconds``; the count sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.connect(("127.0.0.1", port))
        send = sock.send
        total = len(datagrams)
        sent = 0
        start = time.monotonic()
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= seconds:
                return sent
            due = min(int(rate * elapsed), int(rate * seconds))
            while sent < due:
                first = sent % total
                last = min(total, first + (due - sent))
                # A refused send (an ICMP error: nothing listened a moment ago) ends the burst
                # early; its datagrams count as sent, and so as lost.
                with contextlib.suppress(ConnectionRefusedError):
                    for datagram in datagrams[first:last]:
                        send(datagram)
                sent += last - first
            time.sleep(BURST_S)


def main(argv: Sequence[str] | None = None) -> None:
    """Build, send, print what was sent as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench._loadgen")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="datagrams per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--shape", choices=("multi", "single"), required=True)
    parser.add_argument("--dialect", choices=("dogstatsd", "etsy", "collectd"), required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--distinct", type=int, default=0, help="datagrams built (0: auto)")
    parser.add_argument(
        "--start-at", type=float, default=0.0, help="time.monotonic() to start sending at"
    )
    args = parser.parse_args(argv)
    distinct = args.distinct or (3_000 if args.shape == "multi" else 30_000)
    datagrams = build_datagrams(args.shape, args.dialect, args.seed, distinct)
    lines_per_cycle = sum(datagram.count(b"\n") + 1 for datagram in datagrams)
    time.sleep(max(0.0, args.start_at - time.monotonic()))
    started = time.monotonic()
    sent = _send(args.port, datagrams, args.rate, args.seconds)
    seconds = time.monotonic() - started
    cycles, rest = divmod(sent, len(datagrams))
    lines = cycles * lines_per_cycle + sum(d.count(b"\n") + 1 for d in datagrams[:rest])
    print(json.dumps({"datagrams": sent, "lines": lines, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
