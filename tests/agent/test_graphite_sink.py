"""The Graphite sink against a real TCP server on loopback: what a flush does when the
connection fails after its points were handed over."""

from __future__ import annotations

import asyncio

import pytest

from crdtstream.agent.sinks import GraphiteSink, Point, graphite_line

POINTS = [Point("e2e.k", {}, float(n), 60 * n, 60_000 * n) for n in range(3)]


async def _flush_twice_with_failing_close() -> tuple[bytes, GraphiteSink, list[bool]]:
    received = bytearray()
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.extend(await reader.read())
        writer.close()
        done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink = GraphiteSink("127.0.0.1", port, connect_timeout_s=2.0)
    sink.enqueue(POINTS)
    results = [await sink.flush()]
    await asyncio.wait_for(done.wait(), 5.0)
    results.append(await sink.flush())  # nothing left to send: nothing sent again
    await asyncio.sleep(0.1)
    server.close()
    await server.wait_closed()
    return bytes(received), sink, results


def test_points_handed_over_are_not_sent_again_when_the_close_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def reset(self: asyncio.StreamWriter) -> None:
        raise ConnectionResetError("reset by peer while closing")

    monkeypatch.setattr(asyncio.StreamWriter, "wait_closed", reset)
    received, sink, results = asyncio.run(_flush_twice_with_failing_close())
    assert received == b"".join(graphite_line(point) for point in POINTS)
    assert results == [True, True]
    assert sink.stats.points_sent == len(POINTS)
    assert sink.stats.flushes_failed == 0
    assert sink.stats.closes_failed == 1
