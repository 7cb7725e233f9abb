"""Evaluation tools that drive the API: a simulated world, MovieLens replay, their figures
and reports."""
