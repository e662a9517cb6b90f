"""The error tree of crdtstream.

Every error the package raises on purpose derives from :class:`CrdtStreamError`, so a caller can
catch one class at the edge of its program. Remote and local faults are kept apart: a
:class:`DecodeError` says a peer (or a file) sent bytes we refuse; a :class:`ConfigError` says the
operator asked for something impossible.

::

    CrdtStreamError
    ├── DecodeError            malformed, truncated, oversized or unknown bytes (remote fault)
    ├── ProtocolViolationError a well-formed message no correct peer sends (remote fault)
    ├── MergeError             two states that cannot be joined (e.g. different HLL precisions)
    ├── ConfigError            a configuration value is missing, out of range or inconsistent
    ├── KindConflictError      a key was used with a second kind
    ├── InvalidValueError      a write's value, operation or time that its key cannot take
    ├── RefusedError           a request the key's mode does not allow (carries the reason)
    ├── TransportError         a transport could not do what was asked
    │   ├── PeerUnknownError   send to a peer id that was never added (or was removed)
    │   ├── PayloadTooLargeError  a payload over the transport's size limit
    │   └── TransportClosedError  the endpoint was closed
    ├── UnavailableError       a quorum or strong operation could not reach its majority in time
    │   └── NotLeaderError     this node is not the Raft leader (carries the leader's id if known)
    └── StorageError           durable state on disk is unusable beyond automatic repair

A handler of peers' frames decides at decode time whether a frame is malformed: decoders raise
:class:`DecodeError` and nothing else, and the handler counts and drops such a frame. Only
:class:`DecodeError`, :class:`ProtocolViolationError` and :class:`MergeError` (a peer's store
parameters differ) are caught around a peer's input, each where it can be raised; any other
exception from handling a frame is a bug and propagates.

Programming errors (a negative increment on a grow-only counter, a quantile outside [0, 1]) are
reported with the built-in :class:`ValueError` / :class:`TypeError`, as the standard library does.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CrdtStreamError",
    "DecodeError",
    "InvalidValueError",
    "KindConflictError",
    "MergeError",
    "NotLeaderError",
    "PayloadTooLargeError",
    "PeerUnknownError",
    "ProtocolViolationError",
    "RefusedError",
    "StorageError",
    "TransportClosedError",
    "TransportError",
    "UnavailableError",
]


class CrdtStreamError(Exception):
    """Base class of every error raised on purpose by crdtstream."""


class DecodeError(CrdtStreamError):
    """Bytes that do not decode: truncated, corrupt, wrong tag or version, oversized."""


class ProtocolViolationError(CrdtStreamError, ValueError):
    """A message that decodes but that no correct peer sends, found against local state (a
    Raft append that would overwrite committed entries, say). Nothing was changed."""


class MergeError(CrdtStreamError):
    """Two states that cannot be merged because their parameters differ."""


class ConfigError(CrdtStreamError):
    """A configuration value that is missing, out of range, or inconsistent.

    The message names the offending field, e.g. ``window.size_ms: must be > 0, got -5``.
    """


class KindConflictError(CrdtStreamError):
    """A key was written with a kind other than the one it already has."""


class InvalidValueError(CrdtStreamError, ValueError):
    """A write the key cannot take: an unknown operation, a value its kind cannot hold, an
    event time too far ahead of the clock. Also a :class:`ValueError`, as bad arguments are."""


class RefusedError(CrdtStreamError):
    """A request the key's consistency mode does not allow, such as a write to a ``strong``
    key that cannot go through Raft, or a read stronger than the key's mode serves.
    ``reason`` says why, in words meant for the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransportError(CrdtStreamError):
    """A transport could not perform an operation."""


class PeerUnknownError(TransportError):
    """A send named a peer id that is not (or no longer) known to the endpoint."""


class PayloadTooLargeError(TransportError):
    """A payload exceeds the transport's ``max_payload_bytes``."""


class TransportClosedError(TransportError):
    """The endpoint has been closed; it neither sends nor receives any more."""


class UnavailableError(CrdtStreamError):
    """A quorum or strong operation could not reach its majority before its deadline."""


class NotLeaderError(UnavailableError):
    """This node is not the Raft leader; ``leader_id`` names the leader when known."""

    def __init__(self, message: str, leader_id: str | None = None) -> None:
        super().__init__(message)
        self.leader_id = leader_id


class StorageError(CrdtStreamError):
    """Durable state on disk is unusable and could not be repaired automatically."""
