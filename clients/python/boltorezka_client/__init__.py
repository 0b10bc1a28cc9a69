"""Python client for the Boltorezka realtime protocol (scripting and load testing)."""

from boltorezka_client.client import (
    BoltorezkaClient,
    ClientError,
    ConnectionLost,
    NackError,
    RequestTimeout,
)

__all__ = ["BoltorezkaClient", "ClientError", "ConnectionLost", "NackError", "RequestTimeout"]
