"""Developer tools: benchmarks, generators, test runner. Run from the repository root as ``python -m tools.<name>``."""
