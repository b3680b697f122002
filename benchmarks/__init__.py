"""Benchmarks: runnable by anyone, results written under benchmarks/results/."""
