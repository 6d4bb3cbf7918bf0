"""Throughput benchmarks (`make bench`): bench.ingest, bench.models."""
