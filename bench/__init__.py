"""Benchmarks: the harness (python -m bench, or scripts/bench) and the older single scripts."""
