"""The Litestar API: events in, items in, feeds out."""
