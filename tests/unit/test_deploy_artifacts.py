"""The dashboard, the alerts and the runbook agree with cdc_claims.metrics and with each other.

Read straight from the chart's files (no helm needed): the dashboard is plain JSON, and the
PrometheusRule template's PromQL and alert names are found with regular expressions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from cdc_claims import metrics
from cdc_claims.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "cdc-claims"
DASHBOARD = CHART / "dashboards" / "cdc-claims.json"
RULES = CHART / "templates" / "prometheusrule.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"

METRIC_TOKEN = re.compile(r"\bcdc_claims_[a-z_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
ALERT = re.compile(r"^\s*-\s*alert:\s*([A-Za-z0-9_]+)\s*$", re.MULTILINE)


def defined_metrics() -> dict[str, str]:
    """Base name -> type of every collector in cdc_claims.metrics (counters without ``_total``)."""
    found: dict[str, str] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                found[family.name] = family.type
    return found


def exposed_names(base: str, kind: str) -> set[str]:
    """The series names Prometheus stores for one collector."""
    if kind == "counter":
        return {f"{base}_total"}
    if kind == "histogram":
        return {base + suffix for suffix in HISTOGRAM_SUFFIXES}
    return {base}


def base_of(token: str, defined: dict[str, str]) -> str | None:
    """The defined metric a PromQL token refers to, or None if it refers to none."""
    for base, kind in defined.items():
        if token in exposed_names(base, kind):
            return base
    return None


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    """(panel title, expr) for every query of every panel, rows included."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    yield panel.get("title", "?"), target["expr"]
            yield from walk(panel.get("panels", []))

    yield from walk(json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"])


def rules() -> dict[str, str]:
    """Alert name -> PromQL, from each ``- alert: X`` / ``expr: |`` block of the template."""
    text = RULES.read_text(encoding="utf-8")
    return dict(re.findall(r"-\s*alert:\s*(\w+)\n\s+expr: \|\n((?:[ ]{12,}.*\n)+)", text))


def rule_exprs() -> list[str]:
    return list(rules().values())


#: Alerts on other exporters' metrics (Strimzi's JMX exporter, kube-state-metrics).
EXTERNAL_ALERTS = {
    "CdcClaimsConnectorDown": "kafka_connect_connector_status",
    "CdcClaimsNotReady": "kube_pod_status_ready",
}


def names(collector: MetricWrapperBase) -> set[str]:
    return {family.name for family in collector.describe()}


def test_collectors_are_found() -> None:
    defined = defined_metrics()
    collectors = [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]
    assert len(defined) == len(collectors) >= 10
    (counter,) = names(metrics.CLAIMS_SUBMITTED)
    (histogram,) = names(metrics.SUBMIT_LATENCY)
    (gauge,) = names(metrics.PENDING_UNITS)
    assert (defined[counter], defined[histogram], defined[gauge]) == ("counter", "histogram", "gauge")


def test_token_resolution_understands_suffixes() -> None:
    defined = defined_metrics()
    (counter,) = names(metrics.CLAIMS_SUBMITTED)
    (histogram,) = names(metrics.SUBMIT_LATENCY)
    (gauge,) = names(metrics.PENDING_UNITS)
    assert base_of(f"{counter}_total", defined) == counter
    assert base_of(counter, defined) is None  # counters are stored with _total only
    assert base_of(gauge, defined) == gauge
    assert base_of(f"{gauge}_total", defined) is None
    assert base_of(f"{histogram}_bucket", defined) == histogram
    assert base_of(f"{histogram}_count", defined) == histogram
    assert base_of(f"{histogram}_total", defined) is None


def test_every_alert_has_a_query_on_our_metrics() -> None:
    found = rules()
    assert sorted(found) == sorted(ALERT.findall(RULES.read_text(encoding="utf-8")))
    for alert, expr in found.items():
        if alert in EXTERNAL_ALERTS:
            assert EXTERNAL_ALERTS[alert] in expr or "$metric" in expr, alert
        else:
            assert METRIC_TOKEN.search(expr), f"{alert} does not query a cdc_claims_ metric"
    values = (CHART / "values.yaml").read_text(encoding="utf-8")
    assert "statusMetric: kafka_connect_connector_status" in values


@pytest.mark.parametrize("source", ["dashboard", "prometheusrule"])
def test_every_promql_metric_exists(source: str) -> None:
    defined = defined_metrics()
    exprs = [e for _, e in dashboard_exprs()] if source == "dashboard" else rule_exprs()
    tokens = {t for e in exprs for t in METRIC_TOKEN.findall(e)}
    assert tokens, f"no cdc_claims_ metric in the {source}"
    unknown = sorted(t for t in tokens if base_of(t, defined) is None)
    assert unknown == [], f"{source} uses metrics cdc_claims.metrics does not define: {unknown}"


def test_every_metric_has_a_dashboard_panel() -> None:
    defined = defined_metrics()
    used = {base_of(t, defined) for _, e in dashboard_exprs() for t in METRIC_TOKEN.findall(e)}
    missing = sorted(set(defined) - used)
    assert missing == [], f"metrics without a dashboard panel: {missing}"


def test_every_alert_has_a_runbook_section() -> None:
    alerts = ALERT.findall(RULES.read_text(encoding="utf-8"))
    assert len(alerts) >= 6
    assert len(alerts) == len(set(alerts)), "duplicate alert names"
    headings = set(re.findall(r"^#{2,4}\s+`?([A-Za-z0-9_]+)`?\s*$", RUNBOOK.read_text(encoding="utf-8"), re.MULTILINE))
    missing = sorted(set(alerts) - headings)
    assert missing == [], f"alerts without a runbook section (heading = alert name): {missing}"


def test_alert_runbook_urls_point_at_their_section() -> None:
    text = RULES.read_text(encoding="utf-8")
    anchors = re.findall(r'printf "%s#([a-z0-9]+)" \$runbook', text)
    assert sorted(anchors) == sorted(a.lower() for a in ALERT.findall(text))


def test_dashboard_is_wired_for_the_grafana_sidecar() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "cdc-claims"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace"} <= variables
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    template = (CHART / "templates" / "grafana-dashboard.yaml").read_text(encoding="utf-8")
    assert '.Files.Get "dashboards/cdc-claims.json"' in template
    values = (CHART / "values.yaml").read_text(encoding="utf-8")
    assert 'grafana_dashboard: "1"' in values


def settings_path_exists(env_name: str) -> bool:
    """Does ``CDC_CLAIMS_A__B`` name a field of :class:`Settings` (``a.b``)?"""
    model: Any = Settings
    for part in env_name.removeprefix("CDC_CLAIMS_").lower().split("__"):
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return False
        model = field.annotation
    return True


def test_every_variable_the_chart_sets_is_a_setting() -> None:
    templates = "".join(p.read_text(encoding="utf-8") for p in (CHART / "templates").glob("*"))
    names = set(re.findall(r"\bCDC_CLAIMS_[A-Z0-9_]+", templates))
    assert {"CDC_CLAIMS_DB__PASSWORD", "CDC_CLAIMS_OPENHIM__CA_BUNDLE", "CDC_CLAIMS_MAPPING_FILE"} <= names
    unknown = sorted(n for n in names if not settings_path_exists(n))
    assert unknown == [], f"the chart sets variables cdc_claims.settings does not read: {unknown}"
    assert not settings_path_exists("CDC_CLAIMS_DB__NO_SUCH_FIELD")


def test_every_setting_is_configurable_from_the_chart() -> None:
    """Each non-secret setting has a ConfigMap entry (secrets come from secretKeyRef in _helpers.tpl)."""
    templates = "".join(p.read_text(encoding="utf-8") for p in (CHART / "templates").glob("*"))
    names = set(re.findall(r"\bCDC_CLAIMS_[A-Z0-9_]+", templates))
    expected = set()
    for name, field in Settings.model_fields.items():
        nested = getattr(field.annotation, "model_fields", None)
        if nested is None:
            expected.add(f"CDC_CLAIMS_{name.upper()}")
        else:
            expected |= {f"CDC_CLAIMS_{name.upper()}__{sub.upper()}" for sub in nested}
    test_only = {"CDC_CLAIMS_FAILPOINT"}  # crash injection for the durability tests, never deployed
    assert sorted(expected - names - test_only) == []
    assert not test_only & names


def _values(name: str = "values.yaml") -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / name).read_text(encoding="utf-8"))
    return loaded


def test_the_desk_is_deployed_by_default_and_its_ingress_only_on_request() -> None:
    desk = _values()["desk"]
    assert desk["enabled"] is True and desk["replicas"] >= 1
    assert desk["service"] == {"type": "ClusterIP", "port": 80, "annotations": {}}
    assert desk["ingress"]["enabled"] is False
    assert desk["existingSecret"]  # the session secret is never a value
    full = _values("ci/full-values.yaml")["desk"]["ingress"]
    assert full["enabled"] is True and full["host"] and full["tls"]["secretName"]


def test_every_desk_value_of_the_chart_is_in_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))["properties"]["desk"]

    def keys(values: dict[str, Any], node: dict[str, Any], path: str) -> Iterator[str]:
        for key, value in values.items():
            child = node.get("properties", {}).get(key)
            if child is None:
                yield f"{path}.{key}"
            elif isinstance(value, dict) and "properties" in child:
                yield from keys(value, child, f"{path}.{key}")

    for name in ("values.yaml", "ci/full-values.yaml"):
        assert list(keys(_values(name)["desk"], schema, "desk")) == [], name


def test_the_desk_pod_runs_like_the_roles_with_the_mapping_and_its_own_probes() -> None:
    """Same pod basics (service account, non-root uid 10001), container security context
    (read-only root, ALL capabilities dropped) and mapping volume as the roles: its actions re-run
    claims. Probes on its own http port, TLS only at the Ingress."""
    deployment = (CHART / "templates" / "desk-deployment.yaml").read_text(encoding="utf-8")
    roles = (CHART / "templates" / "deployment.yaml").read_text(encoding="utf-8")
    shared = (
        'include "cdc-claims.podBasics"',
        "toYaml $root.Values.containerSecurityContext",
        'include "cdc-claims.volumes"',
        'include "cdc-claims.volumeMounts"',
        'include "cdc-claims.containerEnv"',
    )
    for fragment in shared:
        assert fragment in deployment and fragment in roles, fragment
    assert "args: [run, desk]" in deployment
    assert "httpGet: {path: /readyz, port: http}" in deployment
    assert "httpGet: {path: /healthz, port: http}" in deployment
    assert '"dbReader" true "dbWriter" true "openhim" true' in deployment
    ingress = (CHART / "templates" / "desk-ingress.yaml").read_text(encoding="utf-8")
    assert "and .Values.desk.enabled .Values.desk.ingress.enabled" in ingress and "tls:" in ingress
    security = _values()
    assert security["podSecurityContext"]["runAsUser"] == 10001 and security["podSecurityContext"]["runAsNonRoot"]
    assert security["containerSecurityContext"]["readOnlyRootFilesystem"] is True
    assert security["containerSecurityContext"]["capabilities"]["drop"] == ["ALL"]


def test_the_openimis_mapping_check_on_start_is_off_by_default_and_a_mode() -> None:
    """``payer.checkMappingOnStart`` is a mode, not a switch; the default is the string "off"
    (unquoted, YAML 1.1 reads it as false), and each mode is in the schema."""
    assert _values()["payer"]["checkMappingOnStart"] == "off"
    assert _values("ci/full-values.yaml")["payer"]["checkMappingOnStart"] == "block"
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    modes = schema["properties"]["payer"]["properties"]["checkMappingOnStart"]["enum"]
    assert modes == ["off", "warn", "block", False]
    deployment = (CHART / "templates" / "deployment.yaml").read_text(encoding="utf-8")
    assert "args: [check-mapping, --openimis]" in deployment  # block: the CLI's own exit code
