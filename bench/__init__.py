"""Throughput and compile-time benchmarks of jaxflow against torchref; run ``python -m bench``.

Modules: :mod:`bench.harness` (the timing method), :mod:`bench.contenders` (the implementations
and operations), :mod:`bench.peak` (FLOP counts and the measured matmul peak),
:mod:`bench.compile_times` (compile time against depth), :mod:`bench.report` (environment,
table, JSON, plot).
"""
