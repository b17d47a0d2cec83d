"""The synthetic data behind the demo, the tests and the benchmarks: a cell-image
simulator with known injected label errors, and synthetic detector inputs."""
