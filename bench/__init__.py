"""Benchmark harness for dnsserver: generated clusters, pinned servers, dnsperf runs."""
