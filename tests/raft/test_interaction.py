"""Scripted interaction tests with golden output (etcd-io/raft ``interaction_test.go`` style).

Each file in ``testdata/`` is a sequence of blocks::

    # comments
    command args
    ----
    expected output (no blank lines)

Set ``CRDTSTREAM_REWRITE_GOLDEN=1`` to rewrite the expected outputs from the current behaviour,
then review the diff before committing it.

Each command returns the text it prints; the golden files in ``testdata/`` pair every command
with its expected output. Commands (node ids are ``n1``, ``n2``, ...):

    add-nodes N [voters=n1,n2] [log=1,1,2] [term=T] [pre_vote=false] [check_quorum=false]
    campaign NODE              propose NODE DATA          propose-conf-change NODE add|remove ID
    process-ready NODE...      deliver-msgs NODE...       drop-msgs NODE...
    stabilize [NODE...]        tick-heartbeat NODE...     tick-election NODE...
    read-index NODE CTX        transfer-leader NODE TO    compact NODE INDEX
    partition A B / C ...      heal                       restart NODE
    raft-state                 raft-log NODE              status NODE
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import Cluster

from crdtstream.config import RaftConfig
from crdtstream.errors import CrdtStreamError
from crdtstream.raft.storage import MemoryStorage
from crdtstream.raft.types import (
    ConfChange,
    ConfChangeKind,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    Ready,
    decode_conf_change,
)

TESTDATA = Path(__file__).parent / "testdata"
SEPARATOR = "----"


def render_entry(entry: Entry) -> str:
    """``term/index KIND "data"``."""
    text = f"{entry.term}/{entry.index} {entry.kind.name}"
    if entry.kind is EntryKind.CONF_CHANGE:
        change = decode_conf_change(entry.data)
        return f"{text} {change.kind.name} {change.node_id}"
    return f"{text} {entry.data.decode(errors='replace')!r}" if entry.data else text


def render_message(message: Message) -> str:
    """One line per message, fields shown only for the types that use them."""
    kind = message.type
    parts = [f"{message.sender}->{message.to}", kind.name, f"term={message.term}"]
    if kind in (MessageType.APP, MessageType.VOTE, MessageType.PRE_VOTE):
        parts.append(f"log={message.log_term}/{message.index}")
    if kind in (MessageType.APP, MessageType.HEARTBEAT):
        parts.append(f"commit={message.commit}")
    if kind in (MessageType.APP_RESP, MessageType.READ_INDEX_RESP):
        parts.append(f"index={message.index}")
    if message.reject:
        parts.append("rejected")
        if kind is MessageType.APP_RESP:
            parts.append(f"hint={message.log_term}/{message.reject_hint}")
    if message.entries:
        parts.append("entries=[" + ", ".join(render_entry(e) for e in message.entries) + "]")
    if message.context:
        parts.append(f"ctx={_render_context(kind, message.context)}")
    if message.snapshot is not None:
        meta = message.snapshot.meta
        parts.append(f"snapshot={meta.term}/{meta.index} voters={','.join(meta.voters)}")
    return " ".join(parts)


def _render_context(kind: MessageType, context: bytes) -> str:
    if kind in (MessageType.HEARTBEAT, MessageType.HEARTBEAT_RESP) and len(context) == 8:
        return f"round:{int.from_bytes(context, 'little')}"
    return repr(context.decode(errors="replace"))


def render_ready(node_id: str, ready: Ready) -> list[str]:
    """What the driver would see in one Ready."""
    lines = [f"> {node_id} handling Ready"]
    if ready.soft_state is not None:
        soft = ready.soft_state
        lines.append(f"  soft: leader={soft.leader} role={soft.role.name}")
    if ready.hard_state is not None:
        hard = ready.hard_state
        lines.append(f"  hard: term={hard.term} vote={hard.vote} commit={hard.commit}")
    if ready.snapshot is not None:
        meta = ready.snapshot.meta
        lines.append(f"  snapshot: {meta.term}/{meta.index} voters={','.join(meta.voters)}")
    for title, entries in (("entries", ready.entries), ("committed", ready.committed_entries)):
        if entries:
            lines.append(f"  {title}:")
            lines.extend(f"    {render_entry(entry)}" for entry in entries)
    if ready.messages:
        lines.append("  messages:")
        lines.extend(f"    {render_message(message)}" for message in ready.messages)
    for read in ready.read_states:
        lines.append(f"  read: index={read.index} ctx={read.request_ctx.decode()!r}")
    return lines


def _options(words: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    positional = [w for w in words if "=" not in w]
    named = dict(w.split("=", 1) for w in words if "=" in w)
    return positional, named


def _flag(named: dict[str, str], key: str, default: bool) -> bool:
    return named.get(key, str(default).lower()) == "true"


class Interpreter:
    """Runs commands against one cluster and renders what happened."""

    def __init__(self) -> None:
        self.cluster = Cluster(())
        self.commands: dict[str, Callable[[list[str]], list[str]]] = {
            "add-nodes": self.add_nodes,
            "campaign": self.campaign,
            "propose": self.propose,
            "propose-conf-change": self.propose_conf_change,
            "process-ready": self.process_ready,
            "deliver-msgs": self.deliver_msgs,
            "drop-msgs": self.drop_msgs,
            "stabilize": self.stabilize,
            "tick-heartbeat": self.tick_heartbeat,
            "tick-election": self.tick_election,
            "read-index": self.read_index,
            "transfer-leader": self.transfer_leader,
            "compact": self.compact,
            "partition": self.partition,
            "heal": self.heal,
            "restart": self.restart,
            "raft-state": self.raft_state,
            "raft-log": self.raft_log,
            "status": self.status,
        }

    def run(self, command_line: str) -> str:
        """Execute one command line and return its output (never empty)."""
        name, *words = command_line.split()
        try:
            lines = self.commands[name](words)
        except CrdtStreamError as error:
            lines = [f"error: {type(error).__name__}: {error}"]
        return "\n".join(lines) if lines else "ok"

    # -- setup --

    def add_nodes(self, words: list[str]) -> list[str]:
        positional, named = _options(words)
        config = RaftConfig(
            election_timeout_ticks=int(named.get("election", "10")),
            heartbeat_ticks=int(named.get("heartbeat", "1")),
            max_inflight_appends=int(named.get("inflight", "64")),
            pre_vote=_flag(named, "pre_vote", True),
            check_quorum=_flag(named, "check_quorum", True),
        )
        first = len(self.cluster.peers) + 1
        ids = [f"n{i}" for i in range(first, first + int(positional[0]))]
        voters = tuple(named["voters"].split(",")) if "voters" in named else tuple(ids)
        if not self.cluster.peers:
            self.cluster.initial_voters = voters
        self.cluster.config = config
        terms = [int(t) for t in named["log"].split(",")] if "log" in named else []
        for node_id in ids:
            storage = MemoryStorage(voters)
            storage.append([Entry(t, i) for i, t in enumerate(terms, 1)])
            if "term" in named:
                storage.set_hard_state(HardState(int(named["term"]), None, 0))
            self.cluster.add_peer(node_id, storage)
        return []

    # -- inputs --

    def campaign(self, words: list[str]) -> list[str]:
        self.cluster.node(words[0]).campaign()
        return []

    def propose(self, words: list[str]) -> list[str]:
        self.cluster.node(words[0]).propose(words[1].encode())
        return []

    def propose_conf_change(self, words: list[str]) -> list[str]:
        kind = ConfChangeKind.ADD_VOTER if words[1] == "add" else ConfChangeKind.REMOVE_VOTER
        self.cluster.node(words[0]).propose_conf_change(ConfChange(kind, words[2]))
        return []

    def read_index(self, words: list[str]) -> list[str]:
        self.cluster.node(words[0]).read_index(words[1].encode())
        return []

    def transfer_leader(self, words: list[str]) -> list[str]:
        self.cluster.node(words[0]).transfer_leader(words[1])
        return []

    def tick_heartbeat(self, words: list[str]) -> list[str]:
        for node_id in words:
            self.cluster.tick(node_id, self.cluster.config.heartbeat_ticks)
        return []

    def tick_election(self, words: list[str]) -> list[str]:
        for node_id in words:
            self.cluster.tick(node_id, self.cluster.config.election_timeout_ticks)
        return []

    # -- the driver loop, step by step --

    def process_ready(self, words: list[str]) -> list[str]:
        lines: list[str] = []
        for node_id in words:
            ready = self.cluster.process_ready(node_id)
            if ready is not None:
                lines.extend(render_ready(node_id, ready))
        return lines

    def deliver_msgs(self, words: list[str]) -> list[str]:
        lines: list[str] = []
        for node_id in words:
            queued = list(self.cluster.queues[node_id])
            if queued:
                lines.append(f"> {node_id} receiving messages")
                lines.extend(f"  {render_message(m)}" for m in queued)
                self.cluster.deliver(node_id)
        return lines

    def drop_msgs(self, words: list[str]) -> list[str]:
        lines: list[str] = []
        for node_id in words:
            lines.extend(f"dropped: {render_message(m)}" for m in self.cluster.queues[node_id])
            self.cluster.queues[node_id] = []
        return lines

    def stabilize(self, words: list[str]) -> list[str]:
        ids = words or sorted(self.cluster.peers)
        lines: list[str] = []
        for _ in range(1_000):
            step = self.process_ready(ids) + self.deliver_msgs(ids)
            if not step:
                return lines
            lines.extend(step)
        raise AssertionError("stabilize did not settle")

    # -- faults and maintenance --

    def partition(self, words: list[str]) -> list[str]:
        groups: list[list[str]] = [[]]
        for word in words:
            if word == "/":
                groups.append([])
            else:
                groups[-1].append(word)
        self.cluster.heal()
        self.cluster.partition(*groups)
        return []

    def heal(self, words: list[str]) -> list[str]:
        self.cluster.heal()
        return []

    def restart(self, words: list[str]) -> list[str]:
        self.cluster.restart(words[0])
        return []

    def compact(self, words: list[str]) -> list[str]:
        peer = self.cluster.peers[words[0]]
        index = int(words[1])
        snapshot = peer.storage.create_snapshot(index, peer.voters, b"state@%d" % index)
        peer.storage.compact(index)
        meta = snapshot.meta
        return [f"snapshot {meta.term}/{meta.index} voters={','.join(meta.voters)}"]

    # -- inspection --

    def raft_state(self, words: list[str]) -> list[str]:
        lines = []
        for node_id in sorted(self.cluster.peers):
            s = self.cluster.node(node_id).status()
            lines.append(
                f"{node_id}: {s.role.name} term={s.term} leader={s.leader} vote={s.vote} "
                f"commit={s.commit} applied={s.applied} last={s.last_index}"
            )
        return lines

    def raft_log(self, words: list[str]) -> list[str]:
        log = self.cluster.node(words[0]).raft.log
        entries = log.slice(log.first_index(), log.last_index() + 1)
        return [render_entry(entry) for entry in entries] or ["(empty)"]

    def status(self, words: list[str]) -> list[str]:
        raft = self.cluster.node(words[0]).raft
        lines = []
        for node_id, progress in sorted(raft.tracker.progress.items()):
            lines.append(
                f"{node_id}: {progress.state.value} match={progress.match} next={progress.next} "
                f"inflight={progress.inflights.count()}"
            )
        return lines


# -- the script files --


@dataclass
class Block:
    """One command, the comment lines before it, and its expected output."""

    comments: list[str]
    command: str
    expected: str
    line_number: int


def parse(text: str) -> list[Block]:
    """Split a script into blocks."""
    blocks: list[Block] = []
    comments: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            if line.startswith("#"):
                comments.append(line)
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1] != SEPARATOR:
            raise ValueError(f"line {i + 2}: expected {SEPARATOR!r} after {line!r}")
        output: list[str] = []
        j = i + 2
        while j < len(lines) and lines[j].strip():
            output.append(lines[j])
            j += 1
        blocks.append(Block(comments, line, "\n".join(output), i + 1))
        comments = []
        i = j
    return blocks


def render(blocks: list[Block]) -> str:
    """The script text of ``blocks`` (the inverse of :func:`parse`)."""
    parts = []
    for block in blocks:
        parts.append("\n".join([*block.comments, block.command, SEPARATOR, block.expected]))
    return "\n\n".join(parts) + "\n"


SCRIPTS = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script(script: Path) -> None:
    """Every command of the script prints exactly its golden output."""
    blocks = parse(script.read_text())
    interpreter = Interpreter()
    rewrite = os.environ.get("CRDTSTREAM_REWRITE_GOLDEN") == "1"
    for block in blocks:
        actual = interpreter.run(block.command)
        if rewrite:
            block.expected = actual
        else:
            assert actual == block.expected, (
                f"{script.name}:{block.line_number}: {block.command}\n"
                f"--- expected\n{block.expected}\n--- actual\n{actual}"
            )
    if rewrite:
        script.write_text(render(blocks))


def test_scripts_exist() -> None:
    """The golden files are found (a moved directory must not pass silently)."""
    assert len(SCRIPTS) >= 5


def test_parse_and_render_round_trip() -> None:
    """Rewriting a script keeps its commands and comments."""
    text = "# a comment\nraft-state\n----\nok\n\nheal\n----\nok\n"
    assert render(parse(text)) == text
