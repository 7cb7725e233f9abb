"""Pure feature functions, one topic a module: the one definition used by the flows, the
trainer and the API."""
