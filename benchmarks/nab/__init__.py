"""The Numenta Anomaly Benchmark, scored from NAB's published method (issue #4)."""
