"""fridaymorning: canary releases for any web service behind HAProxy."""

__version__ = "0.1.0"

__all__ = ["__version__"]
