"""The Platform role: start and stop instances of a version.

`Platform` is the protocol (base.py). `LocalPlatform` runs instances as local subprocesses (local://);
it needs nothing beyond fm's own dependencies, so it is re-exported here. Other implementations are
chosen by URL scheme through fridaymorning.registry and imported only when used.
"""

from fridaymorning.platform.base import Platform
from fridaymorning.platform.local import LocalPlatform, cleanup_stale

__all__ = ["LocalPlatform", "Platform", "cleanup_stale"]
