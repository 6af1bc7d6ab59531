"""Benchmarks that start their own components on loopback: ``python -m bench.NAME --json``.

Recorded figures, with the machines they ran on, are in ``bench/README.md``.
"""
