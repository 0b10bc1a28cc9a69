"""The `boltorezka-loadtest` command (also `boltorezka loadtest` and `python -m ...loadtest`)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from boltorezka_client.loadtest import accounts, coordinator, provision, report, targets
from boltorezka_client.loadtest.scenario import from_args, parser

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        scenario = from_args(args)
        targets.check(list(scenario.urls), allow_remote=scenario.allow_remote)
    except ValueError as exc:
        print(f"boltorezka-loadtest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="bz-loadtest-") as tmp:
        path = scenario.tokens
        if scenario.provision:
            path = path or Path(tmp) / "tokens.json"
            try:
                provision.provision(scenario, path)
            except provision.ProvisionError as exc:
                print(f"boltorezka-loadtest: {exc}", file=sys.stderr)
                return EXIT_USAGE
        assert path is not None
        try:
            loaded = accounts.load(path)
            outcome = coordinator.run(scenario, loaded)
        except ValueError as exc:
            print(f"boltorezka-loadtest: {exc}", file=sys.stderr)
            return EXIT_USAGE
        refreshed = {k: v for r in outcome.results for k, v in r.refreshed.items()}
        accounts.save_refreshed(loaded, refreshed)
    summary = report.summarize(
        scenario,
        outcome.results,
        rooms=outcome.room_sizes,
        interrupted=outcome.interrupted,
        timed_out=outcome.timed_out,
    )
    print(report.table(summary), flush=True)
    if scenario.json_out is not None:
        report.write_json(scenario.json_out, summary)
    return EXIT_INTERRUPTED if outcome.interrupted else EXIT_OK
