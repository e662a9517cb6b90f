"""Benchmark suites of ``crdtstream bench``.

Each suite is a module ``bench/<name>.py`` exposing ``run(args: argparse.Namespace) -> Report``
and ``add_arguments(parser)``; :mod:`bench.report` defines the one JSON shape they all print.
"""
