"""How the pieces are started: the embedded local stack for `make run` and tests."""
