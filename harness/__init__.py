"""privbench's engine: suites, registries, runner, metrics and results. Knows no method by name."""

__version__ = "0.1.0"
