"""Bytewax dataflows: each has build_flow(settings), and flow() for `python -m bytewax.run`."""
