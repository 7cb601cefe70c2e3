"""A paced HTTP load generator for loopback targets (traffic.py), used by `fm demo` and load-test hooks."""
