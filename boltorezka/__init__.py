"""Boltorezka: realtime chat, voice and video signaling server."""

__version__ = "0.1.0"
