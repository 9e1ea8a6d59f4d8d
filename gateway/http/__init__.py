"""HTTP endpoints: health, readiness and Prometheus metrics."""
