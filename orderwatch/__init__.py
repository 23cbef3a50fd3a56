"""OrderWatch: streaming monitoring and anomaly alerting for e-commerce order systems."""

__version__ = "0.1.0"
