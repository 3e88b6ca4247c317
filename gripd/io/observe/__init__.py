"""Observability: events, stats packets, Prometheus metrics and request logging."""
