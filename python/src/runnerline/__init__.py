"""Runnerline's Python SDK: `Runner` takes rollouts from a Runnerline server and runs a handler for each;
`Client` enqueues rollouts and waits for their results. Both speak gRPC with stubs generated from the
server's proto files (runnerline.v1)."""

from runnerline.client import Client
from runnerline.errors import ClientError, RunnerlineError, RunnerRefusedError, SessionReplacedError
from runnerline.job import Job
from runnerline.runner import Runner
from runnerline._version import __version__

__all__ = [
    "__version__",
    "Client",
    "ClientError",
    "Job",
    "Runner",
    "RunnerRefusedError",
    "RunnerlineError",
    "SessionReplacedError",
]
