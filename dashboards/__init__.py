"""Grafana dashboards as code, their provisioning, and the Prometheus rules."""
