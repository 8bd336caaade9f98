"""The production files under deploy/ are checked, since no test runs them.

promtool ships in Debian's ``prometheus`` package; where it is missing the
rule checks are skipped with that reason rather than passing silently.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml  # type: ignore[import-untyped]  # no stubs; comes with uvicorn[standard]
from prometheus_client import REGISTRY, CollectorRegistry
from pydantic import TypeAdapter

from services.nurture.settings import NurtureSettings
from shared.launcher.stack import SERVICE_PORTS
from tests.conftest import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules" / "redial.rules.yml"
RULE_TESTS = PROMETHEUS / "redial.rules.test.yml"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (`make promtool` installs it where it can)",
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


# A PromQL name: not part of a longer word or number (so the `5m:` of a
# subquery is no name), and recorded names keep their colons.
_NAME = re.compile(r"(?<![\w:.$])[a-zA-Z_:][\w:]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
# Samples each metric type exposes; `_created` is left out on purpose.
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
}


def _exported_series() -> set[str]:
    """Every series name the services' metrics modules define, plus ``up``."""
    modules = ["shared.metrics"] + [
        f"services.{path.parent.name}.metrics"
        for path in sorted((ROOT / "services").glob("*/metrics.py"))
    ]
    registries = [REGISTRY]
    for module in modules:
        # A module may keep some of its metrics in a registry of its own
        # (rendered apart, appended to /metrics): those are exported too.
        registries += [
            value
            for value in vars(importlib.import_module(module)).values()
            if isinstance(value, CollectorRegistry) and value is not REGISTRY
        ]
    names = {"up"}  # Prometheus' own, one per scrape target
    for registry in registries:
        for family in registry.collect():
            for suffix in _SUFFIXES.get(family.type, ("",)):
                names.add(family.name + suffix)
    return names


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _rule_expressions() -> Iterator[tuple[str, str]]:
    for rule in _rules():
        yield rule.get("alert") or rule["record"], rule["expr"]


def _dashboard_expressions(path: Path) -> Iterator[tuple[str, str]]:
    document = orjson.loads(path.read_bytes())
    for panel in document["panels"]:
        for target in panel.get("targets", []):
            yield f"{path.name}: {panel['title']}", target["expr"]
    for variable in document["templating"]["list"]:
        if variable["type"] == "query":
            yield f"{path.name}: ${variable['name']}", variable["definition"]


def _all_expressions() -> list[tuple[str, str]]:
    found = list(_rule_expressions())
    for path in sorted(DASHBOARDS.glob("*.json")):
        found += _dashboard_expressions(path)
    return found


def _names_in(expression: str) -> set[str]:
    return set(_NAME.findall(_STRING.sub('""', expression)))


def test_every_series_the_rules_and_dashboards_read_is_exported() -> None:
    """A renamed or misspelled metric would leave a panel or an alert empty,
    and an alert on an empty series never fires."""
    exported = _exported_series()
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    unknown = []
    for where, expression in _all_expressions():
        for name in _names_in(expression):
            if ":" in name:
                if name not in recorded:
                    unknown.append(f"{where}: {name} (not recorded)")
            elif (name.startswith("redial_") or name == "up") and (
                name not in exported
            ):
                unknown.append(f"{where}: {name}")
    assert not unknown, "\n".join(unknown)


def test_name_extraction_sees_series_and_skips_the_rest() -> None:
    expression = (
        'min_over_time((max by (pool) (redial_queue_due_now{pool=~"redial_x"}))[5m:])'
        " and on (pool) pool:redial_metrics_oldest_uncalled_lead_age_seconds:max"
        "[$__rate_interval]"
    )
    assert {n for n in _names_in(expression) if "redial_" in n} == {
        "redial_queue_due_now",
        "pool:redial_metrics_oldest_uncalled_lead_age_seconds:max",
    }


@pytest.mark.parametrize(
    "path", sorted(DASHBOARDS.glob("*.json")), ids=lambda p: p.name
)
def test_dashboard_variables_are_defined(path: Path) -> None:
    document = orjson.loads(path.read_bytes())
    defined = {variable["name"] for variable in document["templating"]["list"]}
    used = set()
    for panel in document["panels"]:
        text = panel["title"] + " ".join(t["expr"] for t in panel.get("targets", []))
        used |= set(re.findall(r"\$(\w+)", text))
    assert {name for name in used if not name.startswith("__")} <= defined


def test_every_alert_has_a_unit_test() -> None:
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    document = yaml.safe_load(RULE_TESTS.read_text())
    tested = {
        check["alertname"]
        for case in document["tests"]
        for check in case.get("alert_rule_test", [])
        if check["exp_alerts"]
    }
    assert alerts - tested == set(), "alerts never shown firing in a unit test"


@pytest.mark.parametrize("name", ["metrics", "nurture"])
def test_service_runs_in_a_plain_compose_up(name: str) -> None:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = document["services"][name]
    assert "profiles" not in service
    assert "/readyz" in service["healthcheck"]["test"][-1]


def test_every_service_with_an_app_is_deployed_and_scraped() -> None:
    """A service whose code exists must be started by compose on its port,
    scraped by Prometheus and given a dashboard; an unbuilt one must not be
    started, since its container would exit at once."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    scraped = {
        job["job_name"]: job["dns_sd_configs"][0]
        for job in scrape["scrape_configs"]
        if "dns_sd_configs" in job
    }
    for name, port in SERVICE_PORTS.items():
        built = (ROOT / "services" / name / "app.py").exists()
        if not built:
            assert compose[name].get("profiles") == ["unbuilt"], name
            continue
        assert "profiles" not in compose[name], name
        assert compose[name]["ports"] == [f"{port}:{port}"], name
        assert str(port) in compose[name]["command"], name
        assert f"localhost:{port}/" in compose[name]["healthcheck"]["test"][-1]
        assert scraped[name] == {
            "names": [name],
            "type": "A",
            "port": port,
            "refresh_interval": "15s",
        }
        assert (DASHBOARDS / f"{name}.json").exists(), name


def test_nurture_compose_settings_default_to_the_services_own() -> None:
    """Compose passes the NURTURE_* settings through with the defaults of the
    settings class, and the shared environment as every service gets it."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    environment = compose["nurture"]["environment"]
    for field in ("default_timezone", "sms_start", "sms_end"):
        variable = f"NURTURE_{field.upper()}"
        match = re.fullmatch(rf"\$\{{{variable}:-(.+)\}}", environment[variable])
        assert match is not None, environment[variable]
        declared = NurtureSettings.model_fields[field]
        assert declared.annotation is not None
        default = TypeAdapter(declared.annotation).validate_python(match.group(1))
        assert default == declared.default, variable

    shared = {
        name: value
        for name, value in compose["metrics"]["environment"].items()
        if not name.startswith("METRICS_")
    }
    assert environment.items() >= shared.items()
