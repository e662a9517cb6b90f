"""The agent's log: stdlib ``logging``, one line per event, as text or JSON.

The pure cores never log. :class:`ClusterObserver` derives events by comparing what the node
reports between two looks (members and their states, the Raft leader and term, peers refused
for different policy rules) and logs each change once; the runner calls it a few times a
second. Every event is logged under ``crdtstream.*`` with its fields in ``extra["fields"]``,
so the JSON format carries them as keys.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from crdtstream.engine.strong import StrongReplica
from crdtstream.node import Node

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "ClusterObserver",
    "JsonFormatter",
    "configure_logging",
    "log_event",
]

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("text", "json")

logger = logging.getLogger("crdtstream.agent")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        document: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        document.update(getattr(record, "fields", {}))
        if record.exc_info:
            document["traceback"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


class _TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields: Mapping[str, Any] = getattr(record, "fields", {})
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return line.replace("\n", "\\n")


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    """Send ``crdtstream.*`` records at ``level`` and above to stderr in ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("crdtstream")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def log_event(level: int, message: str, **fields: Any) -> None:
    """Log one event with structured fields."""
    logger.log(level, message, extra={"fields": fields})


def log_start(node: Node, **addresses: object) -> None:
    """The start-up line: addresses, rules, data directory, identity and what was restored."""
    config = node.config
    log_event(
        logging.INFO,
        "agent started",
        node_id=config.node_id,
        listen=config.listen_address,
        **{name: address for name, address in addresses.items() if address is not None},
        data_dir=config.data_dir,
        replica=node.identity.replica,
        replica_resumed=node.identity.resumed,
        policy=[f"{rule.pattern}={rule.mode}" for rule in config.policy] or ["*=eventual"],
        rules_fingerprint=node.engine.policy.fingerprint,
        restored_keys=sum(len(keys) for keys in node.engine.store.kind_keys.values()),
        restored_windows=len(node.engine.store.window_starts()),
        raft_voters=[peer.node_id for peer in config.raft_voters],
    )


_MEMBER_EVENTS = {
    "alive": (logging.INFO, "member alive"),
    "suspect": (logging.WARNING, "member suspected"),
    "dead": (logging.WARNING, "member dead"),
    "left": (logging.INFO, "member left"),
}


@dataclass(slots=True)
class ClusterObserver:
    """Logs changes in membership, Raft leadership and refused peers (see the module docs)."""

    node: Node
    members: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    leader: str | None = None
    term: int = 0
    leader_changes: int = 0

    def counters(self) -> dict[str, int]:
        """What the observer counted, for ``/metrics``."""
        return {"leader_changes": self.leader_changes}

    def observe(self) -> None:
        """Compare with the last look and log what changed."""
        self._members()
        self._refused()
        self._raft()

    def _members(self) -> None:
        own = self.node.config.node_id
        for node_id, member in self.node.engine.gossip.membership.members.items():
            if node_id == own or self.members.get(node_id) == member.status:
                continue
            level, message = _MEMBER_EVENTS.get(member.status, (logging.INFO, "member changed"))
            if node_id not in self.members and member.status == "alive":
                message = "member joined"
            previous = self.members.get(node_id)
            self.members[node_id] = member.status
            log_event(
                level,
                message,
                member=node_id,
                address=member.address,
                incarnation=member.incarnation,
                previous=previous,
            )

    def _refused(self) -> None:
        mismatches = self.node.engine.gossip.membership.rules_mismatches
        for node_id, fingerprint in mismatches.items():
            if self.refused.get(node_id) == fingerprint:
                continue
            self.refused[node_id] = fingerprint
            log_event(
                logging.ERROR,
                "peer refused: its policy rules differ from ours",
                peer=node_id,
                reason="rules_mismatch",
                peer_rules_fingerprint=fingerprint,
                our_rules_fingerprint=self.node.engine.policy.fingerprint,
            )
        for node_id in set(self.refused) - set(mismatches):
            del self.refused[node_id]
            log_event(logging.INFO, "peer accepted: policy rules now match", peer=node_id)

    def _raft(self) -> None:
        strong = self.node.engine.strong
        if not isinstance(strong, StrongReplica):
            return
        status = strong.status()
        leader, term = status.leader, status.term
        if leader != self.leader and leader:
            self.leader_changes += 1
            log_event(logging.INFO, "raft leader changed", leader=leader, term=term)
        elif term != self.term and term > self.term:
            log_event(logging.DEBUG, "raft term advanced", term=term, leader=leader)
        self.leader, self.term = (leader or None), term
