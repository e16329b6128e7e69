"""The benchmarks: `python bench/<script>.py` or `python -m bench.<script>` from the
checkout; bench/RESULTS.md has the figures and the commands."""
