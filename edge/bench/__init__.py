"""``edge bench``: benchmark_model-grade invoke statistics, the pipeline, the serial loop, a simulated
accelerator, cold start and power. :mod:`edge.bench.runner` runs the modes; :mod:`edge.bench.report`
formats the result."""
