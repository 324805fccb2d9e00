"""The lab: the simulator, efficiency tables and the harnesses tests and benchmarks share."""
