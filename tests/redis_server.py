"""The tests' private redis-server: the same one ``backlane dev`` starts."""

from backlane.embedded import RedisServer, free_port

__all__ = ["RedisServer", "free_port"]
