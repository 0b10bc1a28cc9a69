"""The shipped Prometheus alert rules: valid for promtool, each pointing at a RUNBOOK.md
playbook that exists, and querying only metrics the server exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from aiohttp.test_utils import TestClient

from tests.redis_server import require_program
from tests.test_metrics import exported_names, promql_names, scrape

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
RUNBOOK = ROOT / "RUNBOOK.md"
# Prometheus's own series, present for every scrape target.
_PROMETHEUS_SERIES = {"up"}


def _alerts() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    return [rule for rule in rules if "alert" in rule]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    anchors: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_promtool_accepts_the_rules() -> None:
    promtool = require_program(shutil.which("promtool"), "promtool (Debian package prometheus)")
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_every_alert_links_to_a_runbook_playbook_that_exists() -> None:
    anchors = _anchors(RUNBOOK.read_text())
    alerts = _alerts()
    assert len(alerts) >= 8
    for rule in alerts:
        url = rule.get("annotations", {}).get("runbook_url", "")
        page, _, anchor = url.partition("#")
        assert page == "RUNBOOK.md" and anchor, f"{rule['alert']}: runbook_url {url!r}"
        assert anchor in anchors, f"{rule['alert']}: RUNBOOK.md has no heading #{anchor}"
        assert rule["annotations"].get("summary"), rule["alert"]


def test_the_anchor_check_knows_a_missing_heading() -> None:
    anchors = _anchors("# Title\n\n### Calls fail (TURN)\n```bash\n# not a heading\n```\n")
    assert anchors == {"title", "calls-fail-turn"}


async def test_every_metric_an_alert_queries_is_exported(client: TestClient[Any, Any]) -> None:
    exported = exported_names(await scrape(client)) | _PROMETHEUS_SERIES
    for rule in _alerts():
        names = promql_names(rule["expr"]) | (
            _PROMETHEUS_SERIES & set(re.findall(r"\b\w+\b", rule["expr"]))
        )
        assert names, f"{rule['alert']}: no metric in its expression"
        assert names <= exported, f"{rule['alert']}: {sorted(names - exported)} not exported"
