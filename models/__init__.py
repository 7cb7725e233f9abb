"""Features, the ranker and online embeddings: shared by flows, trainer and API."""
