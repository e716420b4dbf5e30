"""The supervisor: restarts work whose lease expired, expires jobs past their deadlines, delivers webhooks.

    process.py           the loop and ``backlane supervisor``
    contact.py           after a Redis outage, leases get a lease's time before any is taken over
    upkeep.py            what it decides: expired leases (restart, fail, cancel), deadlines, retiring
    webhook_delivery.py  signed deliveries of every status change, in order, with retries
"""

from .process import Supervisor, run_supervisor

__all__ = ["Supervisor", "run_supervisor"]
