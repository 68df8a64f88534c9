"""Fault injection against the real local stack: kill, restart, count what was lost.

Shared by the test suite (small scale, tests/test_faults.py) and `make chaos` (larger scale,
writes docs/reliability.md).
"""
