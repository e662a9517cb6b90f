"""Build of the one compiled part: the statsd line scanner (``crdtstream.ingest._cscan``).

It is optional: where no C compiler is found the package installs without it and the parser
uses its numpy scanner, which gives the same results, only slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "crdtstream.ingest._cscan",
            sources=["crdtstream/ingest/_cscan.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Werror=implicit"],
            optional=True,
        )
    ]
)
