"""The shipped Grafana dashboard and Prometheus alert rules (deploy/observability/) name only metrics that Xhuma
exposes at /metrics, after one exchange so that labelled series exist; the rules are complete and loaded by the
Compose stack's Prometheus."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from tests.support.exchange import app_client, full_exchange

from xhuma.app import create_app

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
PROMETHEUS_OWN = {"up"}  # made by Prometheus for every target, not by Xhuma
METRIC = re.compile(r"\b(?:xhuma|process|python)_[a-z0-9_]+\b|\bup\b")


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def named_metrics(expressions: list[str]) -> set[str]:
    return {name for expression in expressions for name in METRIC.findall(expression)}


def exposed(text: str) -> set[str]:
    """Sample names, and the families declared by # TYPE (a labelled metric with no series yet)."""
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    names |= {line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    return names


async def test_every_metric_the_dashboard_and_the_alert_rules_name_exists_in_metrics(make_settings: Any) -> None:
    app = create_app(make_settings())
    async with app_client(app) as client:
        await full_exchange(client)
        text = (await client.get("/metrics")).text
    names = named_metrics(dashboard_expressions() + [rule["expr"] for rule in alert_rules()])
    assert {"xhuma_requests_total", "xhuma_stage_seconds_bucket", "xhuma_build_info", "process_cpu_seconds_total",
            "xhuma_upstream_errors_total", "xhuma_breakers"} <= names
    assert names - PROMETHEUS_OWN - exposed(text) == set()
    # The exchange made the series the panels plot: per transaction, per upstream stage, build info.
    for series in ('xhuma_requests_total{outcome="success",transaction="ITI-39"}',
                   'xhuma_stage_seconds_bucket{le="+Inf",stage="gpconnect"}',
                   'xhuma_build_info{revision="unknown",version='):
        assert series in text


def test_alert_rules_are_complete_and_loaded_by_the_compose_prometheus() -> None:
    rules = alert_rules()
    assert len({rule["alert"] for rule in rules}) == len(rules) >= 5
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in compose["services"]["prometheus"]["volumes"])
    assert mounts["./deploy/observability/alerts.yml"] in config["rule_files"]
