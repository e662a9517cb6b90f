"""The edge agent: statsd/DogStatsD over UDP in, HTTP JSON out, around one :class:`Node`.

The shell layer: argv and TOML configuration, sockets, signals. No protocol logic lives here.
"""
