"""The benchmark of base-runner: ``python -m bench`` prints every figure as a ratio to a baseline.

See ``bench/README.md``.
"""
