"""Timing scripts for ldminv: decoder geometry, live scoring and attacks (see README.md).

Run everything with ``python benchmarks/run_all.py [--quick]``; the modules here are plain
functions returning JSON-ready dicts, so they can also be called one at a time.
"""
