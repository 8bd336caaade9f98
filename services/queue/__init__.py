"""Queue service: shared, prioritized dialing pools (not built yet).

The package exists so the layout and the import boundaries are in place; the
launcher starts only services that have an ``app.py``.
"""
