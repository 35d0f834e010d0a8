"""Channels with a bearer token and TLS, for the runner (grpc.aio) and the client (sync grpc)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import grpc

PemSource = Union[str, bytes, os.PathLike, None]


def _read_pem(source: PemSource) -> Optional[bytes]:
    """PEM bytes, or the contents of the file a str/path names."""
    if source is None or isinstance(source, bytes):
        return source
    return Path(source).read_bytes()


def channel_credentials(
    tls: bool, tls_ca: PemSource, tls_cert: PemSource, tls_key: PemSource
) -> Optional[grpc.ChannelCredentials]:
    """TLS credentials when TLS is asked for (tls=True: the system's roots) or a CA or client certificate
    is given; None: plaintext."""
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("tls_cert and tls_key go together")
    if not (tls or tls_ca is not None or tls_cert is not None):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem(tls_ca), private_key=_read_pem(tls_key), certificate_chain=_read_pem(tls_cert)
    )


def auth_metadata(token: Optional[str]) -> Tuple[Tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def channel_options(extra: Sequence[Tuple[str, object]] = (), initial_backoff_s: float = 0.1, max_backoff_s: float = 10.0) -> List[Tuple[str, object]]:
    options = {
        # Pings find a silently dead connection (lost host, NAT drop) within keepalive time + timeout.
        "grpc.keepalive_time_ms": 20_000,
        "grpc.keepalive_timeout_ms": 10_000,
        # gRPC's own reconnect back-off (up to 120 s) would otherwise outlast ours.
        "grpc.initial_reconnect_backoff_ms": max(1, int(initial_backoff_s * 1000)),
        "grpc.max_reconnect_backoff_ms": max(1, int(max_backoff_s * 1000)),
        "grpc.max_send_message_length": 16 * 1024 * 1024,
        "grpc.max_receive_message_length": 16 * 1024 * 1024,
    }
    options.update(dict(extra))
    return list(options.items())
