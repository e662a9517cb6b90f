"""The replicated state machine of strong keys: commands applied in log order, exactly once.

Every replica applies the same committed commands in the same order and so holds the same state;
nothing here may depend on anything but the log (no clock, no randomness, no iteration over
unordered sets). A command names a key, its kind, an operation and the event's ``timestamp_ms``,
which picks the windows it lands in (the same windows as eventual keys, :class:`WindowConfig`).
The newest timestamp applied so far is the machine's watermark: a command whose windows all
closed (end + allowed lateness <= watermark) or fell out of retention is late, refused and
counted, as are malformed commands — each gets an error result and nothing else is lost.

Quotas use ``conditional_add``: it applies only when every window it touches stays ``<= limit``
and its result says whether it applied. Client sessions give exactly-once semantics (Raft §8):
every command carries ``(client_id, sequence)``; a retried command is not applied again and the
first result is returned.

Idempotency keys extend that across nodes and restarts (Ongaro's thesis §6.3: the session table
is part of the replicated state, registered and expired by a clock every replica agrees on). A
command carrying a client's ``idempotency_key`` is registered with its request digest and its
result; a later command with the same key and digest — a retry sent to any node, before or after
any restart or leader change — is not applied and gets the first result; one with another digest
is refused everywhere. The table's clock is the machine's watermark (the newest event time
applied, so every replica reads the same clock at the same log index): a key is forgotten
``idempotency_ttl_ms`` after it was registered, and the oldest keys go first beyond
``idempotency_keys_max``. The table is part of snapshots.

The same table decides who applies a **quorum** write's idempotency key. A quorum write is
applied to the eventual store of the node that takes it, under that node's replica slot, where
nothing tells one write from another; so a retry at another node must not apply it again, and
only the node that applied it can say whether it did. ``claim`` registers the key (with the
write's digest) as held by the claiming replica, or answers who holds it and in what state:
``claimed`` (being applied), ``done`` (applied, with the events accepted) or ``released`` (its
holder did not apply it: the next claim takes it). ``settle`` moves a claim from ``claimed`` to
``done`` or ``released``, for its holder only. These commands change nothing else.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from crdtstream import wire
from crdtstream.config import WindowConfig
from crdtstream.errors import ConfigError, DecodeError
from crdtstream.raft.commands import (
    CLAIM_OPERATIONS,
    CLAIMS_HELD,
    INT_MAX,
    KINDS,
    OPERATIONS,
    TEXT_KINDS,
    Command,
    Result,
    check_count,
    check_value,
    decode_command,
    decode_result,
    encode_command,
    encode_result,
    result_body,
    result_from,
)
from crdtstream.raft.types import Entry, EntryKind

__all__ = [
    "KINDS",
    "OPERATIONS",
    "Command",
    "KeyView",
    "Result",
    "StateMachine",
    "decode_command",
    "decode_result",
    "encode_command",
    "encode_result",
]


@dataclass(frozen=True, slots=True)
class KeyView:
    """A key's kind and its retained windows as ``(start_ms, end_ms, value)``, oldest first."""

    kind: str
    windows: tuple[tuple[int, int, Any], ...]


@dataclass(slots=True)
class _Key:
    kind: str
    windows: dict[int, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Registration:
    """An idempotency key's request digest, first result and the machine clock it came at."""

    digest: str
    result: Result
    registered_ms: int


IDEMPOTENCY_REUSED = "idempotency key {key!r} was used for another request"
"""The error of a command whose idempotency key was registered with another request."""

CLAIMED, DONE, RELEASED = "claimed", "done", "released"
"""The states of a quorum write's claim: the value of its registration's result is
``[state, holder]``, plus the events accepted when ``done``."""


@dataclass(slots=True)
class _Session:
    highest: int = -1
    results: dict[int, Result] = field(default_factory=dict)


class StateMachine:
    """Keys, windows and client sessions, changed only by :meth:`apply_entry` in log order."""

    def __init__(
        self,
        window: WindowConfig | None = None,
        *,
        session_results_max: int = 64,
        sessions_max: int = 10_000,
        idempotency_keys_max: int = 100_000,
        idempotency_ttl_ms: int = 24 * 3_600_000,
    ) -> None:
        if session_results_max < 1 or sessions_max < 1 or idempotency_keys_max < 1:
            raise ValueError(
                "session_results_max, sessions_max and idempotency_keys_max must be >= 1"
            )
        if idempotency_ttl_ms < 1:
            raise ValueError("idempotency_ttl_ms must be >= 1")
        self.idempotency_keys_max = idempotency_keys_max
        self.idempotency_ttl_ms = idempotency_ttl_ms
        self.window = window if window is not None else WindowConfig()
        self.session_results_max = session_results_max
        self.sessions_max = sessions_max
        self.applied_index = 0
        self.watermark_ms = 0
        self.rejected_commands = 0
        """Malformed commands and commands that do not fit their key (kind or operation)."""
        self.late_commands = 0
        self._keys: dict[str, _Key] = {}
        self._sessions: dict[str, _Session] = {}
        # Idempotency key -> registration, in log order (so also in order of registered_ms).
        self._idempotent: dict[str, _Registration] = {}
        # Claims in state ``claimed``: idempotency key -> holder (an index of the table above).
        self._claimed: dict[str, str] = {}

    # -- applying --

    def apply_entry(self, entry: Entry) -> Result | None:
        """Apply one committed entry; ``None`` for entries that carry no command."""
        if entry.index <= self.applied_index:
            raise ValueError(f"entry {entry.index} is already applied ({self.applied_index})")
        self.applied_index = entry.index
        if entry.kind != EntryKind.NORMAL or not entry.data:
            return None
        return self.apply(entry.data)

    def apply_entries(self, entries: Sequence[Entry]) -> list[Result | None]:
        """Apply committed entries in order; one result (or ``None``) per entry."""
        return [self.apply_entry(entry) for entry in entries]

    def apply(self, data: bytes) -> Result:
        """Apply one encoded command, at most once per ``(client_id, sequence)``."""
        try:
            command = decode_command(data)
        except DecodeError as error:
            self.rejected_commands += 1
            return Result(ok=False, error=f"malformed command: {error}")
        session = self._session(command.client_id)
        if command.sequence in session.results:
            return session.results[command.sequence]
        if command.sequence <= session.highest - self.session_results_max:
            return Result(ok=False, error=f"sequence {command.sequence} is too old to dedupe")
        result = self._execute_once(command)
        session.results[command.sequence] = result
        session.highest = max(session.highest, command.sequence)
        floor = session.highest - self.session_results_max
        for sequence in [s for s in session.results if s <= floor]:
            del session.results[sequence]
        return result

    def _execute_once(self, command: Command) -> Result:
        """Execute ``command`` unless its idempotency key was registered already."""
        if command.operation in CLAIM_OPERATIONS:
            return self._claim(command)
        if command.operation == CLAIMS_HELD:
            pairs = self.claims_held_by(str(command.value))
            return Result(ok=True, value=[[key, digest] for key, digest in pairs])
        if not command.idempotency_key or command.operation == "read":
            return self._execute(command)
        registered = self._idempotent.get(command.idempotency_key)
        if registered is not None:
            if registered.digest != command.request_digest:
                self.rejected_commands += 1
                return Result(
                    ok=False, error=IDEMPOTENCY_REUSED.format(key=command.idempotency_key)
                )
            return registered.result
        result = self._execute(command)
        self._register(command.idempotency_key, command.request_digest, result)
        return result

    def _register(self, key: str, digest: str, result: Result) -> None:
        """Remember ``key`` from now on (at the young end, so expiry stays in log order)."""
        self._expire_idempotency_keys()
        self._idempotent.pop(key, None)
        self._idempotent[key] = _Registration(digest, result, self.watermark_ms)
        if len(self._idempotent) > self.idempotency_keys_max:
            self._forget(next(iter(self._idempotent)))

    def _forget(self, key: str) -> None:
        del self._idempotent[key]
        self._claimed.pop(key, None)

    def _claim(self, command: Command) -> Result:
        """``claim`` or ``settle`` a quorum write's idempotency key (see the module docstring).

        A claim answers ``applied=True`` when the claimer now holds the key, else the key's
        registration as it stands (``applied=False``); a settle answers ``applied=True`` when it
        changed the claim.
        """
        key = command.idempotency_key
        self.watermark_ms = max(self.watermark_ms, command.timestamp_ms)  # the table's clock
        registered = self._idempotent.get(key)
        state = None if registered is None else _claim_state(registered.result)
        if registered is not None and (
            registered.digest != command.request_digest or state is None
        ):
            self.rejected_commands += 1
            return Result(ok=False, error=IDEMPOTENCY_REUSED.format(key=key))
        if command.operation == "claim":
            if registered is not None and state != RELEASED:
                return Result(ok=True, applied=False, value=registered.result.value)
            result = Result(ok=True, applied=True, value=[CLAIMED, command.value])
            self._register(key, command.request_digest, result)
            if key in self._idempotent:
                self._claimed[key] = str(command.value)
            return result
        value = _settled(command.value)
        if value is None:
            self.rejected_commands += 1
            return Result(ok=False, error=f"malformed settle {command.value!r}")
        if registered is None or state != CLAIMED or registered.result.value[1] != value[1]:
            current = None if registered is None else registered.result.value
            return Result(ok=True, applied=False, value=current)
        settled = Result(ok=True, applied=True, value=value)
        self._idempotent[key] = dataclasses.replace(registered, result=settled)
        del self._claimed[key]
        return settled

    def claims_held_by(self, holder: str) -> list[tuple[str, str]]:
        """The idempotency keys (with their digests) that ``holder`` claimed and has not
        settled: a holder that restarted releases those it never applied."""
        return [
            (key, self._idempotent[key].digest)
            for key, claimer in self._claimed.items()
            if claimer == holder
        ]

    def _expire_idempotency_keys(self) -> None:
        """Forget keys registered ``idempotency_ttl_ms`` or longer ago by the machine clock."""
        horizon_ms = self.watermark_ms - self.idempotency_ttl_ms
        table = self._idempotent
        while table:
            oldest = next(iter(table))
            if table[oldest].registered_ms > horizon_ms:
                break
            self._forget(oldest)

    def idempotency_keys(self) -> int:
        """How many idempotency keys the replicated table remembers now."""
        return len(self._idempotent)

    def _session(self, client_id: str) -> _Session:
        """The client's session, moved to the most recently used end; the least recently used
        session is forgotten when there are too many (a deterministic choice: log order).
        """
        session = self._sessions.pop(client_id, None) or _Session()
        if len(self._sessions) >= self.sessions_max:
            del self._sessions[next(iter(self._sessions))]
        self._sessions[client_id] = session
        return session

    def _execute(self, command: Command) -> Result:
        key = self._keys.get(command.key)
        if key is not None and key.kind != command.kind:
            self.rejected_commands += 1
            return Result(
                ok=False, error=f"key {command.key!r} is a {key.kind}, not a {command.kind}"
            )
        if command.operation == "read":
            return Result(ok=True, value=self.value(command.key, command.timestamp_ms))
        self.watermark_ms = max(self.watermark_ms, command.timestamp_ms)
        starts = self._open_window_starts(command.timestamp_ms)
        if not starts:
            self.late_commands += 1
            return Result(ok=False, error=f"late: every window of {command.timestamp_ms} is closed")
        if key is None:
            key = self._keys[command.key] = _Key(command.kind)
        if command.operation == "conditional_add" and not _fits(key, starts, command):
            return Result(ok=True, applied=False, value=key.windows.get(starts[-1], 0))
        updated = {
            start: _update(key.kind, command.operation, key.windows.get(start), command.value)
            for start in starts
        }
        if any(not _representable(state) for state in updated.values()):
            self.rejected_commands += 1
            return Result(ok=False, error=f"{command.key!r}: the result would overflow int64")
        key.windows.update(updated)
        self._evict(key)
        return Result(ok=True, applied=True, value=_public(key.kind, key.windows[starts[-1]]))

    def _open_window_starts(self, timestamp_ms: int) -> list[int]:
        """The starts of the windows holding ``timestamp_ms`` that are still open, oldest first."""
        size, slide = self.window.size_ms, self.window.effective_slide_ms
        newest = timestamp_ms - timestamp_ms % slide
        oldest_kept = self._oldest_retained_start()
        starts = [newest - step * slide for step in range(size // slide)]
        open_starts = [
            start
            for start in starts
            if start + size + self.window.allowed_lateness_ms > self.watermark_ms
            and start >= oldest_kept
        ]
        return sorted(open_starts)

    def _oldest_retained_start(self) -> int:
        slide = self.window.effective_slide_ms
        newest = self.watermark_ms - self.watermark_ms % slide
        return newest - (self.window.retention_windows - 1) * slide

    def _evict(self, key: _Key) -> None:
        oldest_kept = self._oldest_retained_start()
        for start in [s for s in key.windows if s < oldest_kept]:
            del key.windows[start]

    # -- reading --

    def keys(self) -> list[str]:
        """Every key written so far (a change feed re-reads them when the log moves)."""
        return list(self._keys)

    def read(self, key: str) -> KeyView | None:
        """The key's retained windows, or ``None`` for a key never written."""
        found = self._keys.get(key)
        if found is None:
            return None
        size = self.window.size_ms
        oldest_kept = self._oldest_retained_start()
        windows = tuple(
            (start, start + size, _public(found.kind, state))
            for start, state in sorted(found.windows.items())
            if start >= oldest_kept
        )
        return KeyView(found.kind, windows)

    def value(self, key: str, timestamp_ms: int) -> Any:
        """The value of the newest window of ``key`` holding ``timestamp_ms`` (``None`` if none)."""
        found = self._keys.get(key)
        if found is None:
            return None
        newest = timestamp_ms - timestamp_ms % self.window.effective_slide_ms
        state = found.windows.get(newest)
        return None if state is None else _public(found.kind, state)

    def key_names(self) -> list[str]:
        """Every key written so far, sorted."""
        return sorted(self._keys)

    # -- snapshots --

    def snapshot(self) -> bytes:
        """The whole machine as bytes; replicas that applied the same log give the same bytes."""
        keys = [
            [
                name,
                key.kind,
                [
                    [start, _state_body(key.kind, key.windows[start])]
                    for start in sorted(key.windows)
                ],
            ]
            for name, key in sorted(self._keys.items())
        ]
        sessions = [
            [
                client,
                session.highest,
                [
                    [sequence, result_body(result)]
                    for sequence, result in sorted(session.results.items())
                ],
            ]
            for client, session in self._sessions.items()
        ]
        idempotent = [
            [key, entry.digest, result_body(entry.result), entry.registered_ms]
            for key, entry in self._idempotent.items()
        ]
        body = [
            [self.window.size_ms, self.window.effective_slide_ms],
            self.applied_index,
            self.watermark_ms,
            self.rejected_commands,
            self.late_commands,
            keys,
            sessions,
            idempotent,
        ]
        return wire.encode(wire.Tag.RAFT_MACHINE_SNAPSHOT, body)

    def restore(self, data: bytes) -> None:
        """Replace the whole machine with a snapshot; :class:`DecodeError` on bad bytes, and
        :class:`ConfigError` when the snapshot was taken with other window sizes.
        """
        found, body = wire.decode(data)
        if found != wire.Tag.RAFT_MACHINE_SNAPSHOT:
            raise DecodeError(f"expected a state machine snapshot, got tag {found}")
        window = self.window
        if not (
            isinstance(body, list)
            and body
            and body[0] == [window.size_ms, window.effective_slide_ms]
        ):
            raise ConfigError(
                f"window: the snapshot was taken with other windows than size_ms="
                f"{window.size_ms}, slide_ms={window.effective_slide_ms}"
            )
        fresh = wire.build_checked(body, self._restored)
        for name in (
            "applied_index",
            "watermark_ms",
            "rejected_commands",
            "late_commands",
            "_keys",
            "_sessions",
            "_idempotent",
            "_claimed",
        ):
            setattr(self, name, getattr(fresh, name))

    def _restored(self, body: Any) -> StateMachine:
        # Snapshots taken before idempotency keys were replicated have no table.
        _, applied, watermark, rejected, late, keys, sessions, *rest = body
        if len(rest) > 1:
            raise ValueError("a state machine snapshot has 7 or 8 fields")
        machine = StateMachine(
            self.window,
            session_results_max=self.session_results_max,
            sessions_max=self.sessions_max,
            idempotency_keys_max=self.idempotency_keys_max,
            idempotency_ttl_ms=self.idempotency_ttl_ms,
        )
        for value, name in (
            (applied, "applied_index"),
            (watermark, "watermark_ms"),
            (rejected, "rejected"),
            (late, "late"),
        ):
            check_count(value, name)
        machine.applied_index, machine.watermark_ms = applied, watermark
        machine.rejected_commands, machine.late_commands = rejected, late
        for name, kind, windows in keys:
            if kind not in OPERATIONS or not isinstance(name, str):
                raise ValueError(f"bad key {name!r} of kind {kind!r}")
            machine._keys[name] = _Key(
                kind, {_int(start): _state_from(kind, state) for start, state in windows}
            )
        for client, highest, results in sessions:
            if not isinstance(client, str) or type(highest) is not int:
                raise TypeError("a session is [client id, highest sequence, results]")
            stored = {_int(sequence): result_from(result) for sequence, result in results}
            machine._sessions[client] = _Session(highest, stored)
        for key, digest, result, registered_ms in rest[0] if rest else []:
            if not (isinstance(key, str) and isinstance(digest, str)):
                raise TypeError("an idempotency entry is [key, digest, result, registered_ms]")
            check_count(registered_ms, "registered_ms")
            machine._idempotent[key] = _Registration(digest, result_from(result), registered_ms)
            value = machine._idempotent[key].result.value
            if _claim_state(machine._idempotent[key].result) == CLAIMED:
                machine._claimed[key] = str(value[1])
        return machine


def _fits(key: _Key, starts: list[int], command: Command) -> bool:
    """Whether a conditional add keeps every window it touches within its limit."""
    assert command.limit is not None
    assert not isinstance(command.value, str)
    return all(key.windows.get(start, 0) + command.value <= command.limit for start in starts)


def _representable(state: Any) -> bool:
    """Whether a window state still fits the codec (integer sums stay within int64)."""
    if type(state) is int:
        return -INT_MAX <= state <= INT_MAX
    if isinstance(state, float):
        return math.isfinite(state)
    if isinstance(state, list):
        return all(_representable(part) for part in state)
    return True


def _int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _update(kind: str, operation: str, state: Any, value: Any) -> Any:
    """The window state after one operation (a new object: states are never shared)."""
    if kind == "counter":
        return (state or 0) + value
    if kind == "gauge":
        return value
    if kind in TEXT_KINDS:
        members = set() if state is None else set(state)
        if operation == "remove":
            members.discard(value)
        else:
            members.add(value)
        return members
    if kind == "distribution":
        if state is None:
            return [1, value, value, value]
        count, total, low, high = state
        return [count + 1, total + value, min(low, value), max(high, value)]
    if state is None:
        return value
    return max(state, value) if kind == "max" else min(state, value)


def _public(kind: str, state: Any) -> Any:
    """The value a reader sees."""
    if kind == "set":
        return sorted(state)
    if kind == "distinct":
        return len(state)
    if kind == "distribution":
        count, total, low, high = state
        return {"count": count, "sum": total, "min": low, "max": high}
    return state


def _state_body(kind: str, state: Any) -> Any:
    return sorted(state) if kind in TEXT_KINDS else state


def _state_from(kind: str, body: Any) -> Any:
    if kind in TEXT_KINDS:
        if not isinstance(body, list) or not all(isinstance(member, str) for member in body):
            raise TypeError(f"{kind} state must be a list of strings")
        return set(body)
    if kind == "distribution":
        if not isinstance(body, list) or len(body) != 4:
            raise TypeError("distribution state is [count, sum, min, max]")
        for number in body:
            check_value("distribution", number)
        return body
    check_value(kind, body)
    return body


def _claim_state(result: Result) -> str | None:
    """The state of a claim's registration; None for a strong write's."""
    value = result.value
    if isinstance(value, list) and value and value[0] in (CLAIMED, DONE, RELEASED):
        return str(value[0])
    return None


def _settled(text: object) -> list[object] | None:
    """The registration value a settle asks for: ``done <accepted> <holder>`` or
    ``released <holder>``; None when malformed."""
    parts = str(text).split(" ")
    if len(parts) == 3 and parts[0] == DONE and parts[1].isdigit() and parts[2]:
        return [DONE, parts[2], int(parts[1])]
    if len(parts) == 2 and parts[0] == RELEASED and parts[1]:
        return [RELEASED, parts[1]]
    return None
