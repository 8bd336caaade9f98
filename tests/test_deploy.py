"""The production files under deploy/ are checked, since no test runs them.

promtool ships in Debian's ``prometheus`` package; where it is missing the
rule checks are skipped with that reason rather than passing silently.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.conftest import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (apt-get install prometheus provides it)",
)


def _promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *arguments],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_promtool
def test_recording_and_alert_rules_are_valid() -> None:
    result = _promtool("check", "rules", "rules/redial.rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alert_rules_fire_as_their_unit_tests_expect() -> None:
    result = _promtool("test", "rules", "redial.rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "path", sorted(DASHBOARDS.glob("*.json")), ids=lambda p: p.name
)
def test_dashboards_are_json_with_unique_panel_ids(path: Path) -> None:
    document = orjson.loads(path.read_bytes())
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))
    assert document["uid"]
