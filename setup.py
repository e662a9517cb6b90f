"""Build of the compiled parts: the statsd line scanner (``crdtstream.ingest._cscan``) and the
statsd reader's socket drain (``crdtstream.agent._drain``).

Both are optional: where no C compiler is found the package installs without them; the parser
uses its numpy scanner and the reader a Python loop, which give the same results, only slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "crdtstream.ingest._cscan",
            sources=["crdtstream/ingest/_cscan.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Werror=implicit"],
            optional=True,
        ),
        Extension(
            "crdtstream.agent._drain",
            sources=["crdtstream/agent/_drain.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror=implicit"],
            optional=True,
        ),
    ]
)
