"""Side-by-side performance runs of every adapter x server (not tests).

``python -m benchmarks`` from the repository root (``--quick`` for a short smoke run,
``--only NAME`` to filter rows); see ``benchmarks/__main__.py``.
"""
