"""The demo: a sample service with good and bad versions (app.py), driven by fridaymorning.loadgen.

Nothing is imported here on purpose: `python -m fridaymorning.demo.app` imports this package first, and
the sample service must start on the standard library alone, without paying for httpx.
"""
