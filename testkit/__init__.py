"""The test kit: traffic, hostile corpora, fault harness, the demo driver and the local stack.

Used by tests, bench, faults and the demo; never shipped with the package (pyproject.toml).
"""
