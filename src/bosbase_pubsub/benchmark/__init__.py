"""``bosbase-pubsub bench``: benchmark a running server from this machine.

Modules: ``settings`` (the workload, its hard bounds, the loopback check),
``workload`` (the subscriber and publisher connections, raw WebSockets),
``runner`` (one run: identity, setup, window, drain, the result dict),
``stats`` (latency percentiles in bounded memory, the per-second timeline),
``progress`` (the live line), ``report`` (the table, JSON, the optional PNG),
``command`` (the subcommand's flags). It needs only the SDK's dependencies;
the plot needs the ``bench`` extra (matplotlib).
"""
