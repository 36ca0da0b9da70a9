"""Pruning records: export to `datasets`, load and select rows, Hub push and pull, plots."""
