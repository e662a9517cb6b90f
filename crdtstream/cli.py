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
    return 0


def _add_keygen(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keygen_parser = subparsers.add_parser(
        "keygen",
        help="write a CurveZMQ key pair for a node",
        description="Write <node-id>.key (public, to share) and <node-id>.key_secret (mode 0600, "
        "to keep) into DIR. Existing files are never overwritten.",
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
        description="Flags override the TOML file given with --config.",
    )
    agent_parser.add_argument("--config", type=Path, help="TOML configuration file")
    agent_parser.add_argument("--node-id", dest="node_id", help="this node's id")
    agent_parser.add_argument("--listen", help="gossip address, e.g. tcp://127.0.0.1:7946")
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
    agent_parser.add_argument("--data-dir", dest="data_dir", help="snapshots and identity")
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
        help="a key rule PATTERN=MODE (eventual, quorum, strong), first match wins; repeatable",
    )
    agent_parser.set_defaults(handler=_run_agent)


def _run_agent(args: argparse.Namespace) -> int:
    import asyncio

    from crdtstream.agent.runner import run_agent
    from crdtstream.agent.settings import AGENT_FIELDS, load_settings
    from crdtstream.errors import ConfigError, CrdtStreamError

    overrides = {name: getattr(args, name) for name in AGENT_FIELDS}
    try:
        settings = load_settings(args.config, overrides)
    except ConfigError as error:
        print(f"crdtstream agent: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run_agent(settings))
    except (CrdtStreamError, OSError) as error:  # an address in use, an unwritable directory
        print(f"crdtstream agent: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


def _add_demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo_parser = subparsers.add_parser(
        "demo", help="run a three-node cluster on loopback and show it converge"
    )
    demo_parser.add_argument("--seed", type=int, default=1, help="seed of the demo traffic")
    demo_parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    import asyncio

    from crdtstream.agent.demo import QUOTA_LIMIT, run_demo

    outcome = asyncio.run(run_demo(args.seed))
    exact = outcome.quota_applied == QUOTA_LIMIT and set(outcome.quota_reads) == {QUOTA_LIMIT}
    return 0 if exact else 1


def _add_client_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    query_parser = subparsers.add_parser("query", help="read a key from a running agent")
    query_parser.add_argument("key", help="the key, e.g. 'api.hits#env:prod'")
    query_parser.add_argument("--node", default=DEFAULT_NODE_URL, help="the agent's HTTP URL")
    query_parser.add_argument(
        "--consistency",
        choices=("eventual", "quorum", "strong"),
        help="override the key's mode for this read",
    )
    query_parser.set_defaults(handler=_run_query)
    status_parser = subparsers.add_parser("status", help="show a running agent's status")
    status_parser.add_argument("--node", default=DEFAULT_NODE_URL, help="the agent's HTTP URL")
    status_parser.set_defaults(handler=_run_status)


def _http_get(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            print(response.read().decode())
            return 0
    except urllib.error.HTTPError as error:
        print(error.read().decode(), file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as error:
        print(f"crdtstream: cannot reach {url}: {error}", file=sys.stderr)
        return 1


def _run_query(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    url = f"{args.node.rstrip('/')}/v1/keys/{quote(args.key, safe='')}"
    if args.consistency:
        url += f"?consistency={args.consistency}"
    return _http_get(url)


def _run_status(args: argparse.Namespace) -> int:
    return _http_get(f"{args.node.rstrip('/')}/v1/status")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="crdtstream",
        description="CRDT stream aggregation: edge agent, benchmarks and tools.",
    )
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
