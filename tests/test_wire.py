"""The codec: round trips, header routing, and only DecodeError for anything malformed."""

from __future__ import annotations

import random

import lz4.frame
import msgpack
import numpy as np
import pytest

from crdtstream import wire
from crdtstream.errors import DecodeError


@pytest.mark.parametrize(
    "body",
    [
        None,
        1,
        -(2**63),
        "text",
        b"\x00\xff",
        [1, [2, [3]]],
        {1: "a", "b": 2.5},
        list(range(5_000)),  # large enough to be compressed
    ],
)
def test_round_trip(body: object) -> None:
    frame = wire.encode(wire.Tag.G_COUNTER, body)
    assert wire.peek_tag(frame) == wire.Tag.G_COUNTER
    assert wire.decode(frame) == (wire.Tag.G_COUNTER, body)


def test_large_compressible_bodies_are_compressed() -> None:
    frame = wire.encode(wire.Tag.G_SET, ["same"] * 10_000)
    assert frame[1] == 1
    assert len(frame) < 1_000


@pytest.mark.parametrize("dtype", ["<i8", "<u8", "<f8", "<u1", "<i4", ">i8", ">f8"])
def test_numpy_arrays_round_trip_little_endian(dtype: str) -> None:
    array = np.arange(24, dtype=dtype).reshape(4, 6)
    decoded = wire.decode(wire.encode(wire.Tag.HYPER_LOG_LOG, array))[1]
    assert decoded.dtype.byteorder in ("<", "|", "=")
    np.testing.assert_array_equal(decoded, array)
    decoded[0, 0] = 7  # decoded arrays are writable copies, not views of the frame


def test_decode_as_checks_the_tag_before_the_body() -> None:
    frame = wire.encode(wire.Tag.G_SET, [1])
    with pytest.raises(DecodeError, match="expected tag"):
        wire.decode_as(frame, wire.Tag.OR_SET, list)


def test_decode_as_turns_shape_errors_into_decode_error() -> None:
    frame = wire.encode(wire.Tag.G_SET, {"a": 1})
    with pytest.raises(DecodeError):
        wire.decode_as(frame, wire.Tag.G_SET, lambda body: body["missing"])


def test_tags_outside_one_byte_are_refused() -> None:
    with pytest.raises(ValueError, match="tag"):
        wire.encode(256, None)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x01",
        b"\x01\x00",
        b"\x02\x00\x01\xc0",  # unknown version
        b"\x01\x80\x01\xc0",  # unknown flag
        b"\x01\x00\x01\xc1",  # msgpack's never-used byte
        b"\x01\x00\x01\x92\x01",  # truncated array
        b"\x01\x01\x01not lz4 at all",
        b"\x01\x00\x01" + msgpack.packb(msgpack.ExtType(9, b"x")),
        b"\x01\x00\x01" + msgpack.packb(msgpack.ExtType(1, msgpack.packb(["|O", [1], b"x"]))),
        b"\x01\x00\x01" + msgpack.packb(msgpack.ExtType(1, msgpack.packb(["<i8", [2], b"x"]))),
        b"\x01\x00\x01" + msgpack.packb(msgpack.ExtType(1, b"\xc1")),
    ],
)
def test_malformed_frames_raise_decode_error(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        wire.decode(frame)


def test_oversized_frame_is_refused_before_parsing() -> None:
    frame = wire.encode(wire.Tag.G_SET, b"x" * 5_000, compress_threshold_bytes=1 << 30)
    with pytest.raises(DecodeError, match="exceeds"):
        wire.decode(frame, max_bytes=1_000)


def test_decompression_bomb_is_refused() -> None:
    bomb = lz4.frame.compress(msgpack.packb(b"\x00" * (8 << 20)))
    assert len(bomb) < 100_000
    with pytest.raises(DecodeError, match="exceeds"):
        wire.decode(b"\x01\x01\x01" + bomb, max_bytes=1 << 20)


def test_random_mutations_only_raise_decode_error() -> None:
    seed = 20261126
    rng = random.Random(seed)
    originals = [
        wire.encode(wire.Tag.G_SET, {"k": np.arange(50), "v": ["a", 1, 2.5]}),
        wire.encode(wire.Tag.G_SET, list(range(3_000))),
    ]
    for attempt in range(2_000):
        frame = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 4)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        if rng.random() < 0.3:
            del frame[rng.randrange(len(frame)) :]
        try:
            wire.decode(bytes(frame))
        except DecodeError:
            pass
        except Exception as error:  # pragma: no cover - the failure report
            pytest.fail(f"seed={seed} attempt={attempt}: {type(error).__name__}: {error}")
