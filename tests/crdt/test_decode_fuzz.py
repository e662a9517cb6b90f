"""``from_bytes`` of random, mutated and wrongly shaped encodings: only ``DecodeError`` escapes.

Whatever does decode must then behave: its value, encoding and merges work.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtstream import wire
from crdtstream.crdt import Crdt, GCounter, PNCounter
from crdtstream.errors import DecodeError
from tests.crdt.specs import SPECS, TypeSpec

parametrize_specs = pytest.mark.parametrize("spec", SPECS, ids=str)
fuzz_settings = settings(max_examples=60)

arrays = st.one_of(
    st.lists(st.integers(0, 255), max_size=8).map(lambda v: np.array(v, dtype=np.uint8)),
    st.lists(st.integers(0, 2**32 - 1), max_size=8).map(lambda v: np.array(v, dtype=np.uint32)),
    st.lists(st.integers(-(2**40), 2**40), max_size=8).map(lambda v: np.array(v, dtype=np.int64)),
    st.sampled_from([np.zeros(64, dtype=np.uint8), np.zeros(16384, dtype=np.uint8)]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.binary(max_size=5),
    arrays,
)
bodies = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=10),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(-3, 3)), children, max_size=4),
    ),
    max_leaves=30,
)


def sample_encoding(spec: TypeSpec, data: st.DataObject) -> bytes:
    state = spec.build("a")
    for operation in data.draw(st.lists(spec.operations, min_size=1, max_size=6)):
        spec.apply(state, operation)
    return state.to_bytes()


def decode_or_refuse(spec: TypeSpec, encoded: bytes) -> None:
    """Decode; a refusal must be DecodeError, and an accepted state must work normally."""
    cls = type(spec.build("probe"))
    try:
        decoded: Crdt = cls.from_bytes(encoded)
    except DecodeError:
        return
    spec.observe(decoded)
    _ = decoded.value
    again = cls.from_bytes(decoded.to_bytes())
    assert again == decoded
    fresh = spec.build("b")
    fresh.merge(decoded)
    decoded.merge(decoded.copy())


@parametrize_specs
@fuzz_settings
@given(data=st.data())
def test_random_bytes_only_raise_decode_error(spec: TypeSpec, data: st.DataObject) -> None:
    decode_or_refuse(spec, data.draw(st.binary(max_size=200)))


@parametrize_specs
@fuzz_settings
@given(data=st.data())
def test_mutated_encodings_only_raise_decode_error(spec: TypeSpec, data: st.DataObject) -> None:
    encoded = bytearray(sample_encoding(spec, data))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        position = data.draw(st.integers(0, max(0, len(encoded) - 1)))
        if action == "flip" and encoded:
            encoded[position] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "truncate":
            del encoded[position:]
        elif action == "insert":
            encoded[position:position] = data.draw(st.binary(min_size=1, max_size=4))
        elif encoded:
            del encoded[position]
    decode_or_refuse(spec, bytes(encoded))


@parametrize_specs
@fuzz_settings
@given(data=st.data())
def test_wrongly_shaped_bodies_only_raise_decode_error(spec: TypeSpec, data: st.DataObject) -> None:
    tag = type(spec.build("probe")).TAG
    body: Any = data.draw(bodies)
    replica = data.draw(st.one_of(st.just("a"), scalars))
    frame_body = data.draw(st.sampled_from([[replica, body], body, [replica, body, body]]))
    decode_or_refuse(spec, wire.encode(tag, frame_body))


@parametrize_specs
@fuzz_settings
@given(data=st.data())
def test_replaced_fields_of_valid_bodies_only_raise_decode_error(
    spec: TypeSpec, data: st.DataObject
) -> None:
    """Keep the real structure but swap one nested field for something random."""
    tag, frame_body = wire.decode(sample_encoding(spec, data))
    path = [frame_body]
    node: Any = frame_body
    while isinstance(node, list) and node and data.draw(st.booleans()):
        index = data.draw(st.integers(0, len(node) - 1))
        path.append(index)
        parent, node = node, node[index]
        if not isinstance(node, list):
            parent[index] = data.draw(bodies)
            break
    else:
        if isinstance(node, list) and node:
            node[data.draw(st.integers(0, len(node) - 1))] = data.draw(bodies)
    decode_or_refuse(spec, wire.encode(tag, frame_body))


def test_wrong_tag_is_refused() -> None:
    with pytest.raises(DecodeError, match="expected tag"):
        PNCounter.from_bytes(GCounter("a").to_bytes())
