"""Health metrics, streaming anomaly detection and per-order risk scoring."""
