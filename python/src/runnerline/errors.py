"""The SDK's errors."""

from __future__ import annotations

import grpc


class RunnerlineError(Exception):
    """Base of the SDK's errors."""


class RunnerRefusedError(RunnerlineError):
    """The server refused the runner's Hello for a reason retrying cannot fix
    (INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED): Runner.run raises it and does not reconnect."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"the server refused this runner ({code.name}): {details}")
        self.code = code
        self.details = details


class SessionReplacedError(RunnerlineError):
    """The server closed this runner's session because a newer session for the same worker id opened
    (another process runs with this worker id): Runner.run raises it and does not reconnect, so that
    the two processes do not take the worker from each other in turn."""

    def __init__(self, worker_id: str, details: str):
        super().__init__(
            f"worker id {worker_id!r} is in use by another runner: the server replaced this runner's session "
            f"with a newer one ({details}); give each runner its own worker id"
        )
        self.worker_id = worker_id
        self.details = details


class ClientError(RunnerlineError):
    """A Client call failed with a gRPC status: `code` (grpc.StatusCode) and the server's `details`."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str):
        super().__init__(f"{method}: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details
