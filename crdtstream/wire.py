"""The only codec: every byte that leaves a process or lands on disk passes through here.

Frame layout::

    byte 0      VERSION (1)
    byte 1      flags: bit 0 = body is an lz4 frame
    byte 2      tag (1-255), from :class:`Tag`, an append-only table
    bytes 3..   msgpack body, lz4-compressed when larger than a threshold

The tag sits outside the (possibly compressed) body so a receiver can route a frame with
:func:`peek_tag`, and refuse an unexpected one, before inflating or parsing anything.

numpy arrays travel as a msgpack extension (code 1) holding ``[dtype, shape, raw little-endian
bytes]``; only plain numeric dtypes are accepted back.

Anything malformed — truncated, wrong version or tag, wrong types, oversized, a decompression
bomb — raises :class:`~crdtstream.errors.DecodeError` and nothing else. Sizes are checked before
anything is allocated: the frame against ``max_bytes``, the decompressed body against the same
limit while it is being inflated.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, TypeVar

import lz4.frame
import msgpack
import numpy as np
import numpy.typing as npt

from crdtstream.errors import CrdtStreamError, DecodeError

__all__ = [
    "MAX_MESSAGE_BYTES",
    "VERSION",
    "Tag",
    "build_checked",
    "decode",
    "decode_as",
    "encode",
    "peek_tag",
]

VERSION = 1
"""The frame version; a decoder refuses any other."""

MAX_MESSAGE_BYTES = 64 << 20
"""Default ceiling for a frame and for its decompressed body."""

COMPRESS_THRESHOLD_BYTES = 1024
"""Bodies at least this large are lz4-compressed (when that makes them smaller)."""

_FLAG_LZ4 = 0x01
_EXT_NDARRAY = 1
_HEADER_BYTES = 3
_ALLOWED_DTYPES = frozenset(
    np.dtype(name).str
    for name in (
        "<i1",
        "<i2",
        "<i4",
        "<i8",
        "<u1",
        "<u2",
        "<u4",
        "<u8",
        "<f4",
        "<f8",
        "|b1",
        "|i1",
        "|u1",
    )
)

T = TypeVar("T")


class Tag(enum.IntEnum):
    """Message and state tags. ONLY APPEND: the numbers are part of the protocol and the disk
    format. Ranges: 1-31 CRDT types, 32-63 windowed store, 64-95 gossip, membership and catalog,
    96-127 Raft, 128-159 transport, node, engine and agent.
    """

    G_COUNTER = 1
    PN_COUNTER = 2
    G_SET = 3
    OR_SET = 4
    LWW_REGISTER = 5
    MAX_REGISTER = 6
    MIN_REGISTER = 7
    HYPER_LOG_LOG = 8
    DISTRIBUTION = 9
    BOUNDED_COUNTER = 10
    WINDOW_DELTA = 32
    WINDOW_SNAPSHOT = 33
    GOSSIP_DELTA = 64
    GOSSIP_ACK = 65
    SWIM_PING = 66
    SWIM_PING_REQ = 67
    SWIM_ACK = 68
    SWIM_NACK = 69
    SWIM_SYNC = 70
    SWIM_SYNC_REPLY = 71
    CATALOG_SYNC = 72
    SLOT_COUNTERS = 73
    GOSSIP_PROGRESS = 74
    RAFT_MESSAGE = 96
    RAFT_ENTRY = 97
    RAFT_HARD_STATE = 98
    RAFT_SNAPSHOT = 99
    RAFT_CONF_CHANGE = 100
    RAFT_WAL_SNAPSHOT_MARK = 112
    RAFT_WAL_METADATA = 113
    RAFT_MACHINE_COMMAND = 114
    RAFT_MACHINE_RESULT = 115
    RAFT_MACHINE_SNAPSHOT = 116
    NODE_IDENTITY = 128
    STRONG_REQUEST = 129
    STRONG_RESPONSE = 130
    QUORUM_WRITE = 131
    QUORUM_ACK = 132
    QUORUM_READ = 133
    QUORUM_STATE = 134
    PAXOS_MESSAGE = 120
    PAXOS_ACCEPTOR_RECORD = 121
    BOUNDED_STATE = 150
    BOUNDED_REQUEST = 151
    BOUNDED_RETIREMENT = 152
    BOUNDED_ROWS_ASK = 153
    BOUNDED_ROWS = 154


def _pack_default(obj: object) -> Any:
    if isinstance(obj, np.ndarray):
        array = obj
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        array = np.ascontiguousarray(array)
        meta = msgpack.packb([array.dtype.str, list(array.shape), array.tobytes()])
        return msgpack.ExtType(_EXT_NDARRAY, meta)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, (frozenset, set)):
        return list(obj)
    raise TypeError(f"wire cannot encode {type(obj).__name__}")


def _unpack_ext(code: int, data: bytes) -> Any:
    if code != _EXT_NDARRAY:
        raise DecodeError(f"unknown msgpack extension code {code}")
    meta = msgpack.unpackb(data, raw=False, use_list=True)
    if not (isinstance(meta, list) and len(meta) == 3):
        raise DecodeError("ndarray extension must be [dtype, shape, bytes]")
    dtype_str, shape, raw = meta
    if not isinstance(dtype_str, str) or dtype_str not in _ALLOWED_DTYPES:
        raise DecodeError(f"ndarray dtype {dtype_str!r} is not allowed")
    if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise DecodeError("ndarray shape must be a list of non-negative integers")
    if not isinstance(raw, bytes):
        raise DecodeError("ndarray data must be bytes")
    dtype = np.dtype(dtype_str)
    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize != len(raw):
        raise DecodeError(
            f"ndarray of shape {shape} and dtype {dtype_str} needs "
            f"{count * dtype.itemsize} bytes, got {len(raw)}"
        )
    array: npt.NDArray[Any] = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    return array


def encode(
    tag: int, body: Any, *, compress_threshold_bytes: int = COMPRESS_THRESHOLD_BYTES
) -> bytes:
    """Encode ``body`` (msgpack-able values, numpy arrays, sets) under ``tag`` as one frame."""
    if not 0 < int(tag) < 256:
        raise ValueError(f"a tag must be in 1..255, got {tag}")
    packed: bytes = msgpack.packb(body, default=_pack_default, use_bin_type=True)
    flags = 0
    if len(packed) >= compress_threshold_bytes:
        compressed: bytes = lz4.frame.compress(packed, store_size=True)
        if len(compressed) < len(packed):
            packed, flags = compressed, _FLAG_LZ4
    return bytes((VERSION, flags, int(tag))) + packed


def _inflate(data: memoryview, max_bytes: int) -> bytes:
    decompressor = lz4.frame.LZ4FrameDecompressor()
    try:
        out: bytes = decompressor.decompress(bytes(data), max_length=max_bytes + 1)
    except RuntimeError as error:
        raise DecodeError(f"corrupt lz4 frame: {error}") from error
    if len(out) > max_bytes:
        raise DecodeError(f"decompressed body exceeds {max_bytes} bytes")
    if not decompressor.eof:
        raise DecodeError("truncated lz4 frame")
    if decompressor.unused_data:
        raise DecodeError("trailing bytes after lz4 frame")
    return out


def peek_tag(data: bytes | bytearray | memoryview) -> int:
    """The tag of a frame, read from its header without touching the body.

    Raises :class:`DecodeError` when the header itself is malformed (too short, unknown version
    or flags); the body is checked only by :func:`decode`.
    """
    view = memoryview(data)
    if len(view) < _HEADER_BYTES + 1:
        raise DecodeError(f"frame of {len(view)} bytes is too short")
    if view[0] != VERSION:
        raise DecodeError(f"unknown wire version {view[0]}")
    if view[1] & ~_FLAG_LZ4:
        raise DecodeError(f"unknown flags {view[1]:#x}")
    tag: int = view[2]
    return tag


def decode(
    data: bytes | bytearray | memoryview, *, max_bytes: int = MAX_MESSAGE_BYTES
) -> tuple[int, Any]:
    """Decode one frame into ``(tag, body)``; raise :class:`DecodeError` on anything malformed."""
    view = memoryview(data)
    if len(view) > max_bytes:
        raise DecodeError(f"frame of {len(view)} bytes exceeds {max_bytes}")
    tag = peek_tag(view)
    payload = view[_HEADER_BYTES:]
    body_bytes = _inflate(payload, max_bytes) if view[1] & _FLAG_LZ4 else bytes(payload)
    try:
        body = msgpack.unpackb(
            body_bytes,
            raw=False,
            use_list=True,
            strict_map_key=False,
            ext_hook=_unpack_ext,
        )
    except DecodeError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as error:
        raise DecodeError(f"malformed msgpack body: {error}") from error
    return tag, body


def decode_as(
    data: bytes | bytearray | memoryview,
    tag: int,
    build: Callable[[Any], T],
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> T:
    """Decode a frame that must carry ``tag`` and turn its body into an object with ``build``.

    ``build`` may raise :class:`ValueError`, :class:`TypeError`, :class:`KeyError`,
    :class:`IndexError` or :class:`~crdtstream.errors.MergeError` on a body of the wrong shape;
    all of them come out as :class:`DecodeError`, so callers handle one exception.
    """
    found = peek_tag(data)
    if found != tag:
        raise DecodeError(f"expected tag {int(tag)}, got {found}")
    return build_checked(decode(data, max_bytes=max_bytes)[1], build)


def build_checked(body: Any, build: Callable[[Any], T]) -> T:
    """Run ``build(body)``, turning any shape error it raises into :class:`DecodeError`."""
    try:
        return build(body)
    except DecodeError:
        raise
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        OverflowError,
        CrdtStreamError,
    ) as error:
        raise DecodeError(f"malformed body: {type(error).__name__}: {error}") from error
