"""The nightly job: a point-in-time training set, a LightGBM ranker, its gate, the registry."""
