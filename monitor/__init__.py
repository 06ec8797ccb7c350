"""The monitor service: dashboard, JSON API, Prometheus metrics and alert emails (the observer)."""
