"""The ``crdtstream`` command line (also ``python -m crdtstream``).

Subcommands: ``bench SUITE`` runs a benchmark suite from ``bench/`` and prints a table or, with
``--json``, one JSON object. Each subcommand is a small function that parses, wires the shell
pieces together and returns an exit code; no protocol logic lives here.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from crdtstream.agent.events import LOG_FORMATS, LOG_LEVELS
from crdtstream.agent.settings import DEFAULT_LISTEN

__all__ = ["build_parser", "main"]

DEFAULT_NODE_URL = "http://127.0.0.1:8001"


def _bench_suites() -> dict[str, ModuleType]:
    import bench

    suites: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(bench.__path__):
        if info.name.startswith("_") or info.name == "report":
            continue
        module = importlib.import_module(f"bench.{info.name}")
        if hasattr(module, "run") and hasattr(module, "add_arguments"):
            suites[info.name] = module
    return suites


def _add_bench(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench_parser = subparsers.add_parser("bench", help="run a benchmark suite")
    suite_parsers = bench_parser.add_subparsers(dest="suite", required=True, metavar="SUITE")
    for name, module in sorted(_bench_suites().items()):
        doc = (module.__doc__ or name).strip().splitlines()[0]
        suite_parser = suite_parsers.add_parser(name, help=doc, description=module.__doc__)
        suite_parser.add_argument("--json", action="store_true", help="print one JSON object")
        module.add_arguments(suite_parser)
        suite_parser.set_defaults(handler=_run_bench, bench_module=module)


def _run_bench(args: argparse.Namespace) -> int:
    report = args.bench_module.run(args)
    print(report.dumps() if args.json else report.to_table())
    # A suite's promises (no stale strong read, say) are not figures to judge: one broken
    # fails the command, so a script or CI job running the bench notices.
    broken = report.broken_promises()
    if broken:
        print(f"bench {args.suite}: promises broken: {', '.join(broken)}", file=sys.stderr)
        return 1
    return 0


def _add_keygen(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keygen_parser = subparsers.add_parser(
        "keygen",
        help="write a CurveZMQ key pair for a node",
        description="Write <node-id>.key (public, to share) and <node-id>.key_secret (mode 0600, "
        "to keep) into DIR. Existing files are never overwritten.",
        epilog="example:\n  crdtstream keygen --node-id edge-1 --dir keys",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    keygen_parser.add_argument("--node-id", required=True, help="the node the keys are for")
    keygen_parser.add_argument("--dir", default=".", help="where to write (default: .)")
    keygen_parser.set_defaults(handler=_run_keygen)


def _run_keygen(args: argparse.Namespace) -> int:
    # Imported here: the key files are a ZeroMQ format, and zmq stays inside transports.zeromq.
    from crdtstream.errors import CrdtStreamError
    from transports.zeromq import generate_key_pair

    try:
        public_path, secret_path = generate_key_pair(args.dir, args.node_id)
    except (OSError, ValueError, CrdtStreamError) as error:
        print(f"keygen: {error}", file=sys.stderr)
        return 1
    print(f"public key: {public_path}")
    print(f"secret key: {secret_path} (mode 0600; never share it)")
    return 0


def _add_agent(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent_parser = subparsers.add_parser(
        "agent",
        help="run an edge node: statsd in, HTTP JSON out, gossip with peers",
        description="Flags override the TOML file given with --config.\nStart-up failures "
        "(a bad value, an address in use or unknown) exit 2\nwith one line naming the flag.",
        epilog="example:\n  crdtstream agent --node-id n1 --listen tcp://127.0.0.1:7001 "
        "--peer n2=tcp://127.0.0.1:7002 --statsd 127.0.0.1:8125 --http 127.0.0.1:8001 "
        "--policy 'quota.*=strong' --raft-voter n1=tcp://127.0.0.1:7001",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    agent_parser.add_argument("--config", type=Path, help="TOML configuration file (none)")
    agent_parser.add_argument("--node-id", dest="node_id", help="this node's id (required)")
    agent_parser.add_argument(
        "--listen", help=f"gossip address (default: {DEFAULT_LISTEN}, from the TOML if set)"
    )
    agent_parser.add_argument(
        "--peer",
        dest="peers",
        action="append",
        default=[],
        help="a peer as ID=ADDRESS (or a bare seed ADDRESS); repeat for more",
    )
    agent_parser.add_argument(
        "--statsd",
        help="statsd input: HOST:PORT (UDP), udp://HOST:PORT, tcp://HOST:PORT (lines) or "
        "unix:///PATH (Unix datagrams); limits in the [statsd] table (off when absent)",
    )
    agent_parser.add_argument("--http", help="HTTP API HOST:PORT (off when absent)")
    agent_parser.add_argument(
        "--mapping-config",
        dest="mapping_config",
        help="a prometheus/statsd_exporter mapping file for /metrics names (none)",
    )
    agent_parser.add_argument(
        "--metrics-idle-ttl-ms",
        dest="metrics_idle_ttl_ms",
        type=int,
        help="a key with no window this recent leaves /metrics (default: 600000)",
    )
    agent_parser.add_argument(
        "--graphite",
        help="push final windows to Graphite's plaintext HOST:PORT, one node per key and "
        "window across the cluster (off when absent)",
    )
    agent_parser.add_argument(
        "--data-dir", dest="data_dir", help="snapshots and identity (none: nothing kept)"
    )
    agent_parser.add_argument(
        "--raft-voter",
        dest="raft_voters",
        action="append",
        default=[],
        help="a Raft voter as ID=ADDRESS (this node included if it votes); repeat for more",
    )
    agent_parser.add_argument(
        "--policy",
        action="append",
        default=[],
        help="a key rule PATTERN=MODE (eventual, quorum, strong), first match wins; repeatable "
        "(default: every key eventual)",
    )
    agent_parser.add_argument(
        "--log-level", choices=LOG_LEVELS, default="info", help="least severe event logged (info)"
    )
    agent_parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="one line per event, as text or JSON (text)",
    )
    agent_parser.set_defaults(handler=_run_agent)


def _run_agent(args: argparse.Namespace) -> int:
    import asyncio

    from crdtstream.agent.events import configure_logging
    from crdtstream.agent.runner import run_agent
    from crdtstream.agent.settings import AGENT_FIELDS, load_settings
    from crdtstream.errors import ConfigError, CrdtStreamError

    overrides = {name: getattr(args, name) for name in AGENT_FIELDS}
    configure_logging(args.log_level, args.log_format)
    try:
        settings = load_settings(args.config, overrides)
        asyncio.run(run_agent(settings))
    except ConfigError as error:  # a bad value, or an address in use or not resolvable
        print(f"crdtstream agent: {error}", file=sys.stderr)
        return 2
    except (CrdtStreamError, OSError) as error:  # an unwritable directory, a broken snapshot
        print(f"crdtstream agent: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


def _add_demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo_parser = subparsers.add_parser(
        "demo",
        help="run a three-node cluster on loopback and show it converge",
        epilog="example:\n  crdtstream demo --seed 7",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo_parser.add_argument("--seed", type=int, default=1, help="seed of the demo traffic (1)")
    demo_parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    import asyncio

    from crdtstream.agent.demo import QUOTA_LIMIT, run_demo

    outcome = asyncio.run(run_demo(args.seed))
    exact = outcome.quota_applied == QUOTA_LIMIT and set(outcome.quota_reads) == {QUOTA_LIMIT}
    return 0 if exact else 1


def _add_client_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    query_parser = subparsers.add_parser(
        "query",
        help="read a key from a running agent",
        epilog="example:\n  crdtstream query 'api.hits#env:prod' --node http://127.0.0.1:8001",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    query_parser.add_argument("key", help="the key, e.g. 'api.hits#env:prod'")
    query_parser.add_argument(
        "--node", default=DEFAULT_NODE_URL, help=f"the agent's HTTP URL ({DEFAULT_NODE_URL})"
    )
    query_parser.add_argument(
        "--consistency",
        choices=("eventual", "quorum", "strong"),
        help="override the key's mode for this read (default: the key's own mode)",
    )
    query_parser.add_argument("--json", action="store_true", help="print the JSON answer")
    query_parser.set_defaults(handler=_run_query)
    status_parser = subparsers.add_parser(
        "status",
        help="show a running agent's status",
        epilog="example:\n  crdtstream status --node http://127.0.0.1:8001 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status_parser.add_argument(
        "--node", default=DEFAULT_NODE_URL, help=f"the agent's HTTP URL ({DEFAULT_NODE_URL})"
    )
    status_parser.add_argument("--json", action="store_true", help="print the JSON answer")
    status_parser.set_defaults(handler=_run_status)
    remove_parser = subparsers.add_parser(
        "remove-member",
        help="remove a member that is gone for good, so windows go final without it",
        description=(
            "A member that is down holds back every window it had not closed, so that a value "
            "reported final never changes. Remove a member only when it will never come back "
            "with its data; it may rejoin later only with a wiped data directory."
        ),
        epilog="example:\n  crdtstream remove-member n3 --node http://127.0.0.1:8001",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    remove_parser.add_argument("member", help="the node id of the member to remove")
    remove_parser.add_argument(
        "--node", default=DEFAULT_NODE_URL, help=f"the agent's HTTP URL ({DEFAULT_NODE_URL})"
    )
    remove_parser.add_argument(
        "--force",
        action="store_true",
        help="remove it even though this node still believes it alive or suspect",
    )
    remove_parser.add_argument(
        "--retire-bounded",
        action="store_true",
        help="then retire its bounded rows through the Raft log (at the join of every live "
        "node's copy), so that the lowest-id live Raft voter re-issues the rights they hold",
    )
    remove_parser.set_defaults(handler=_run_remove_member)


def _http_get(url: str, *, method: str = "GET") -> tuple[int, Any]:
    """Exit code and parsed JSON answer (None after printing why there is none)."""
    import json
    import urllib.error
    import urllib.request

    try:
        request = urllib.request.Request(url, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return 0, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read().decode("utf-8", "replace")
        try:
            message = json.loads(body).get("error", body)
        except (ValueError, AttributeError):
            message = body
        print(f"crdtstream: {error.code}: {message}", file=sys.stderr)
        return 1, None
    except (urllib.error.URLError, OSError) as error:
        print(f"crdtstream: cannot reach {url}: {error}", file=sys.stderr)
        return 1, None
    except ValueError as error:
        print(f"crdtstream: {url} answered something that is not JSON: {error}", file=sys.stderr)
        return 1, None


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Rows under headers, columns padded to their widest cell."""
    cells = [[str(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def _window_value(value: object) -> str:
    if isinstance(value, dict):
        return " ".join(
            f"{name}={number:.10g}" if isinstance(number, float) else f"{name}={number}"
            for name, number in value.items()
        )
    if isinstance(value, list):
        return "{" + ", ".join(str(item) for item in value) + "}"
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def _run_query(args: argparse.Namespace) -> int:
    import json
    import time
    from urllib.parse import quote

    url = f"{args.node.rstrip('/')}/v1/keys/{quote(args.key, safe='')}"
    if args.consistency:
        url += f"?consistency={args.consistency}"
    code, answer = _http_get(url)
    if answer is None:
        return code
    if args.json:
        print(json.dumps(answer))
        return code
    print(
        f"{answer['key']}  kind={answer['kind']}  mode={answer['mode']}"
        f"  read={answer['consistency']}"
    )
    rows = [
        (
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(window["start_ms"] / 1000)),
            f"{(window['end_ms'] - window['start_ms']) / 1000:g}s",
            "final" if window["final"] else "provisional",
            _window_value(window["value"]),
        )
        for window in answer["windows"]
    ]
    print(_table(("window start (UTC)", "length", "state", "value"), rows))
    return code


def _run_status(args: argparse.Namespace) -> int:
    import json

    code, answer = _http_get(f"{args.node.rstrip('/')}/v1/status")
    if answer is None:
        return code
    if args.json:
        print(json.dumps(answer))
        return code
    print(f"node {answer['node_id']}  replica {answer['replica']}")
    print(f"watermark_ms {answer['watermark_ms']}")
    members = [
        (node_id, member["status"], member["incarnation"], member["address"])
        for node_id, member in sorted(answer["members"].items())
    ]
    print(_table(("member", "state", "incarnation", "address"), members))
    raft = answer.get("raft")
    if raft:
        print()
        print(_table(tuple(raft), [tuple(raft.values())]))
    for group in ("ingest", "ingest_errors", "gossip", "quorum", "node", "transport"):
        values = answer.get(group) or {}
        if values:
            print()
            print(_table((group, "count"), sorted(values.items())))
    return code


def _run_remove_member(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    url = f"{args.node.rstrip('/')}/v1/members/{quote(args.member, safe='')}/remove"
    code, answer = _http_get(url + ("?force=1" if args.force else ""), method="POST")
    if answer is None:
        return code
    state = "removed" if answer["removed"] else "was already removed"
    print(f"member {answer['member']} {state}")
    if code != 0 or not args.retire_bounded:
        return code
    code, answer = _http_get(url.removesuffix("/remove") + "/retire-bounded", method="POST")
    if answer is not None:
        print(f"member {answer['member']}: {answer['rows_retired']} bounded rows retired")
    return code


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crdtstream")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="crdtstream",
        description="CRDT stream aggregation: edge agent, benchmarks and tools.",
        epilog="example:\n  crdtstream agent --node-id n1 --http 127.0.0.1:8001\n"
        "  crdtstream status",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_bench(subparsers)
    _add_keygen(subparsers)
    _add_agent(subparsers)
    _add_demo(subparsers)
    _add_client_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
