"""The Boltorezka load tester: many scripted clients, spread over processes, with a summary.

See ``boltorezka-loadtest --help``; ``main(argv)`` is what every entry point calls.
"""

from boltorezka_client.loadtest.cli import main

__all__ = ["main"]
