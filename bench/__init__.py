"""Benchmarks, each run as a module from the repository root
(``python -m bench.queue``), so ``bench/queue.py`` never stands in for the
standard library's ``queue``."""
