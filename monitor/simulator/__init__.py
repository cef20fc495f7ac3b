"""A wire-level fake of the EC2 VM Import API, for the demo and the tests.

It speaks the EC2 Query protocol over HTTP, so botocore, aioboto3 and the
AWS CLI work against it unchanged with an endpoint URL.
"""

from monitor.simulator.clock import SimClock
from monitor.simulator.faults import Faults
from monitor.simulator.lifecycle import (
    DiskSpec,
    Stall,
    TaskSpec,
    Timeline,
    TimelineBuilder,
)
from monitor.simulator.scenarios import SCENARIOS
from monitor.simulator.server import Endpoint, RequestRecord, Simulator, serve

__all__ = [
    "SCENARIOS",
    "DiskSpec",
    "Endpoint",
    "Faults",
    "RequestRecord",
    "SimClock",
    "Simulator",
    "Stall",
    "TaskSpec",
    "Timeline",
    "TimelineBuilder",
    "serve",
]
