"""Benchmarks: each prints its figures and writes bench/results/<name>.json; report.py renders REPORT.md."""
