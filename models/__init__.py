"""Pure functions and data structures shared by flows, trainer and API: no SQL, no files,
no network."""
