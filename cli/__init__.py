"""The `swipeloop` command, one module per command group, and the embedded one-process stack."""
