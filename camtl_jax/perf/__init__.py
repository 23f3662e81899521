"""Benchmark and ahead-of-time compilation tools: sibling modules over one shared report module
(profiling.py). Nothing in the library imports perf/."""
