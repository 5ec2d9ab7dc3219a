"""Speed benchmarks (``python -m benchmarks.run``, ``make bench``)."""
