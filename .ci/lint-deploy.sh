#!/usr/bin/env bash
# Lint the deployment artefacts: Dockerfile, Helm chart, rendered Kubernetes manifests.
#
#   .ci/lint-deploy.sh            # from anywhere inside the repository
#
# What it checks (each step prints a line; any failure exits non-zero):
#   1. hadolint on the Dockerfile (every rule, down to "style").
#   2. helm lint --strict, with the default values and with helm/cdc-claims/ci/full-values.yaml.
#   3. helm template with both value sets, plus values that MUST be refused (iclm_* capture,
#      two pollers, mTLS without a certificate, ...), and the objects each value set must render
#      (the desk's Deployment and Service by default, its Ingress with TLS only when enabled; the
#      consumer's check-mapping init containers only when asked for, in the mode asked for).
#   4. kubernetes-validate --strict of every core-kind manifest against the oldest Kubernetes the
#      chart supports (Chart.yaml kubeVersion) and the newest schema bundled with kubernetes-validate.
#      Custom resources have no schema there. Only the CRD groups this chart uses are tolerated
#      (kafka.strimzi.io, monitoring.coreos.com); they get structural checks below instead. Any
#      other kind without a schema (a typo in apiVersion, say) is a failure.
#   5. promtool check rules on the rendered PrometheusRule, when promtool is available (it is
#      built from the Go module proxy only with CDC_LINT_INSTALL_PROMTOOL=1: a cold build takes minutes).
#
# Tools: helm is built from the Go module proxy (go install, pinned to $HELM_VERSION) into
# $CDC_CI_CACHE (default ~/.cache/cdc-claims-ci) once; later runs reuse it. hadolint and
# kubernetes-validate come from the project venv (the [dev] extra).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/helm/cdc-claims"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
PROMTOOL_VERSION="${PROMTOOL_VERSION:-v0.316.0}"   # Go module version of Prometheus 3.x
CACHE="${CDC_CI_CACHE:-$HOME/.cache/cdc-claims-ci}"
VENV_BIN="${VENV_BIN:-$ROOT/.venv/bin}"
KUBE_RENDER_VERSION="1.31.0"   # capabilities helm renders against (the Go build has no default)
KUBE_VALIDATE_VERSIONS="${KUBE_VALIDATE_VERSIONS:-1.25.0 1.37.0}"

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

tool() {  # tool NAME: the venv's copy, else PATH
    if [[ -x "$VENV_BIN/$1" ]]; then echo "$VENV_BIN/$1"; elif command -v "$1" >/dev/null; then command -v "$1"; else return 1; fi
}

go_tool() {  # go_tool NAME MODULE@VERSION LDFLAGS: build once into the cache, print the path
    local name=$1 module=$2 ldflags=$3 dir="$CACHE/$1-${2##*@}"
    if [[ ! -x "$dir/$name" ]]; then
        command -v go >/dev/null || fail "$name not cached and no Go toolchain to build it"
        printf 'building %s from the Go module proxy (once; cached in %s)\n' "$module" "$dir" >&2
        mkdir -p "$dir"
        GOBIN="$dir" GOFLAGS=-buildvcs=false go install -ldflags "$ldflags" "$module" >&2 \
            || fail "go install $module"
    fi
    echo "$dir/$name"
}

# ---------------------------------------------------------------------------------------------
step "tools"
HELM="$(go_tool helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION")"
HADOLINT="$(tool hadolint)" || fail "hadolint not found (pip install -e '.[dev]')"
PYTHON="$(tool python)" || fail "python not found"
"$PYTHON" -c "import kubernetes_validate, yaml" 2>/dev/null || fail "kubernetes-validate not installed (pip install -e '.[dev]')"
PROMTOOL=""
if command -v promtool >/dev/null; then
    PROMTOOL="$(command -v promtool)"
elif [[ -x "$CACHE/promtool-$PROMTOOL_VERSION/promtool" || "${CDC_LINT_INSTALL_PROMTOOL:-0}" == 1 ]]; then
    PROMTOOL="$(go_tool promtool "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION" "-s -w")"
fi
echo "helm      $("$HELM" version --template '{{.Version}}') ($HELM)"
echo "hadolint  $("$HADOLINT" --version)"
echo "promtool  ${PROMTOOL:-not available: rule expressions are not parsed (CDC_LINT_INSTALL_PROMTOOL=1 builds it)}"

# ---------------------------------------------------------------------------------------------
step "hadolint Dockerfile (failure threshold: style)"
"$HADOLINT" --failure-threshold style "$ROOT/Dockerfile"
echo "ok"

# ---------------------------------------------------------------------------------------------
step "helm lint --strict (defaults, ci/full-values.yaml)"
"$HELM" lint --strict --kube-version "$KUBE_RENDER_VERSION" "$CHART"
"$HELM" lint --strict --kube-version "$KUBE_RENDER_VERSION" -f "$CHART/ci/full-values.yaml" "$CHART"

# ---------------------------------------------------------------------------------------------
step "helm template (defaults, ci/full-values.yaml)"
render() { "$HELM" template cdc-claims "$CHART" --namespace billing --kube-version "$KUBE_RENDER_VERSION" "$@"; }
render > "$OUT/default.yaml"
render -f "$CHART/ci/full-values.yaml" > "$OUT/full.yaml"
for f in default full; do
    printf '%-8s %s\n' "$f:" "$(grep -E '^kind: ' "$OUT/$f.yaml" | sort | uniq -c | awk '{printf "%s %s, ", $1, $3}')"
done

step "helm template refuses bad values"
refuse() {  # refuse WHY ARGS...: rendering must fail
    local why=$1; shift
    if render "$@" >/dev/null 2>"$OUT/refused.err"; then fail "rendered although $why: $*"; fi
    # the last line of helm's error: the schema path that failed, or the chart's own message
    printf 'refused: %-40s %s\n' "$why" "$(grep -v -e '^\s*$' -e 'Use --debug' "$OUT/refused.err" | tail -n1 | sed -E 's/^.*\): //' | cut -c1-100)"
}
refuse "iclm_* table captured (schema)" --set 'strimzi.connector.tables[0]=iclm_claim'
refuse "cdc_claims_* table captured (schema)" --set 'strimzi.connector.tables[0]=cdc_claims_ledger'
refuse "two pollers" --set roles.poller.replicaCount=2
refuse "mtls without a client certificate" --set openhim.auth=mtls
refuse "bearer without tokenUrl" --set openhim.auth=bearer
refuse "unknown values key (typo)" --set roles.consumer.replicas=2
refuse "connector without a password secret" --set strimzi.connector.enabled=true
refuse "no mapping at all" --set mapping.existingConfigMap=
refuse "CA from a Secret and a ConfigMap" --set openhim.caBundle.secretName=a --set openhim.caBundle.configMapName=b
refuse "desk without its Secret" --set desk.existingSecret=
refuse "desk Ingress without a host" --set desk.ingress.enabled=true
refuse "unknown desk.ingress key (typo)" --set desk.ingress.tls.secret=x
refuse "openIMIS mapping check without payer.url" --set payer.checkMappingOnStart=block
refuse "checkMappingOnStart not a mode" --set payer.url=https://openimis.example.org/api/ --set payer.checkMappingOnStart=true

# ---------------------------------------------------------------------------------------------
step "rendered objects (the desk: Deployment + Service by default, Ingress only when enabled, with TLS)"
render --set desk.enabled=false > "$OUT/no-desk.yaml"
"$PYTHON" - "$OUT" <<'PY'
"""Which objects each value set renders: the desk's are on by default, its Ingress only on request."""
import sys

import yaml

out = sys.argv[1]
DESK = "cdc-claims-desk"


def objects(name: str) -> dict[tuple[str, str], dict]:
    with open(f"{out}/{name}.yaml", encoding="utf-8") as stream:
        return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(stream) if d}


problems = []
expected = {
    "default": {"Deployment": True, "Service": True, "Ingress": False, "NetworkPolicy": False},
    "full": {"Deployment": True, "Service": True, "Ingress": True, "NetworkPolicy": True},
    "no-desk": {"Deployment": False, "Service": False, "Ingress": False, "NetworkPolicy": False},
}
for name, kinds in expected.items():
    found = objects(name)
    for kind, wanted in kinds.items():
        if ((kind, DESK) in found) != wanted:
            problems.append(f"{name}: {kind}/{DESK} {'missing' if wanted else 'rendered although off'}")
    if name != "no-desk":
        pod = found[("Deployment", DESK)]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if container["args"] != ["run", "desk"] or ports.get("http") != 8080 or "metrics" not in ports:
            problems.append(f"{name}: desk container {container['args']} {ports}")
        if container["readinessProbe"]["httpGet"] != {"path": "/readyz", "port": "http"}:
            problems.append(f"{name}: desk readiness {container['readinessProbe']}")
        if container["livenessProbe"]["httpGet"] != {"path": "/healthz", "port": "http"}:
            problems.append(f"{name}: desk liveness {container['livenessProbe']}")
        security = container["securityContext"]
        if not (security["readOnlyRootFilesystem"] and security["capabilities"]["drop"] == ["ALL"]):
            problems.append(f"{name}: desk container security {security}")
        if pod["securityContext"].get("runAsUser") != 10001 or not pod["securityContext"].get("runAsNonRoot"):
            problems.append(f"{name}: desk pod security {pod['securityContext']}")
        if "mapping" not in {v["name"] for v in pod["volumes"]}:
            problems.append(f"{name}: the desk re-runs claims and has no mapping volume")
        secrets = {e["name"] for e in container["env"] if "valueFrom" in e}
        if not {"CDC_CLAIMS_DB__PASSWORD", "CDC_CLAIMS_DB__WRITER_PASSWORD"} <= secrets:
            problems.append(f"{name}: the desk lacks a database password: {sorted(secrets)}")
        service = found[("Service", DESK)]["spec"]
        if {(p["name"], p["port"], p["targetPort"]) for p in service["ports"]} != {("http", 80, "http"), ("metrics", 9464, "metrics")}:
            problems.append(f"{name}: desk Service ports {service['ports']}")
full = objects("full")[("Ingress", DESK)]["spec"]
if not full.get("tls") or not full["tls"][0].get("secretName") or full["tls"][0]["hosts"] != [full["rules"][0]["host"]]:
    problems.append(f"full: the desk Ingress must terminate TLS for its host: {full.get('tls')}")
for problem in problems:
    print("FAIL:", problem, file=sys.stderr)
if not problems:
    print("desk objects as expected in default, full and desk.enabled=false")
sys.exit(1 if problems else 0)
PY

# ---------------------------------------------------------------------------------------------
step "rendered init containers (the consumer's mapping checks: off by default, warn and block as asked)"
render -f "$CHART/ci/full-values.yaml" --set payer.checkMappingOnStart=warn > "$OUT/check-warn.yaml"
render -f "$CHART/ci/full-values.yaml" --set payer.checkMappingOnStart=off > "$OUT/check-off.yaml"
render -f "$CHART/ci/full-values.yaml" --set payer.checkMappingOnStart=false > "$OUT/check-false.yaml"
"$PYTHON" - "$OUT" <<'PY'
"""payer.checkMappingOnStart: an init container of the consumer only, like the consumer itself
(image, environment, Secrets, mounts, security); block runs the CLI as is, warn never fails."""
import sys

import yaml

out = sys.argv[1]
ROLES = ("consumer", "writer", "poller")
NAME = "check-mapping-openimis"
SAME = ("image", "imagePullPolicy", "env", "envFrom", "volumeMounts", "securityContext", "resources")


def pods(name: str) -> dict[str, dict]:
    with open(f"{out}/{name}.yaml", encoding="utf-8") as stream:
        docs = [d for d in yaml.safe_load_all(stream) if d and d["kind"] == "Deployment"]
    return {d["metadata"]["name"].rpartition("-")[2]: d["spec"]["template"]["spec"] for d in docs}


problems = []
# default: payer.url empty, mode off; full: mode block (plus mapping.checkOnStart); the rest: full with the mode set
for name, mode in {"default": None, "full": "block", "check-warn": "warn", "check-off": None, "check-false": None}.items():
    found = pods(name)
    for role in ROLES:
        inits = {c["name"]: c for c in found[role].get("initContainers", [])}
        if role != "consumer" or mode is None:
            if NAME in inits:
                problems.append(f"{name}: {role} has {NAME} although {'not the consumer' if mode else 'off'}")
            continue
        if NAME not in inits:
            problems.append(f"{name}: consumer lacks {NAME} (mode {mode})")
            continue
        init = inits[NAME]
        (main,) = found[role]["containers"]
        for key in SAME:
            if init.get(key) != main.get(key):
                problems.append(f"{name}: {NAME} {key} differs from the consumer's: {init.get(key)} != {main.get(key)}")
        if mode == "block" and ("command" in init or init["args"] != ["check-mapping", "--openimis"]):
            problems.append(f"{name}: block must run the entrypoint as is: {init.get('command')} {init['args']}")
        if mode == "warn":
            script = " ".join(init["args"])
            if init.get("command") != ["/bin/sh", "-c"] or "cdc-claims check-mapping --openimis ||" not in script \
                    or not script.rstrip().endswith("exit 0"):
                problems.append(f"{name}: warn must report and exit 0: {init.get('command')} {init['args']}")
        if name == "full" and list(inits) != ["check-mapping", NAME]:
            problems.append(f"full: the database check first, then openIMIS: {list(inits)}")
for problem in problems:
    print("FAIL:", problem, file=sys.stderr)
if not problems:
    print(f"{NAME}: consumer only, as the consumer runs; block, warn, off/false as expected")
sys.exit(1 if problems else 0)
PY

# ---------------------------------------------------------------------------------------------
step "validate rendered manifests (kubernetes-validate --strict for core kinds: $KUBE_VALIDATE_VERSIONS)"
KUBE_VALIDATE_VERSIONS="$KUBE_VALIDATE_VERSIONS" "$PYTHON" - "$OUT/default.yaml" "$OUT/full.yaml" "$OUT/rules.yaml" <<'PY'
"""Core kinds: strict schema validation. Tolerated CRD groups: structural checks. Anything else: fail."""
import os
import sys

import kubernetes_validate
import yaml

VERSIONS = os.environ["KUBE_VALIDATE_VERSIONS"].split()
CRD_GROUPS = {"kafka.strimzi.io", "monitoring.coreos.com"}
problems: list[str] = []


def need(doc: dict, path: str, kind: type | tuple[type, ...], where: str) -> object:
    value: object = doc
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, kind):
        problems.append(f"{where}: {path} missing or not {kind}")
    return value


def check_crd(doc: dict, where: str) -> None:
    kind = doc["kind"]
    labels = doc.get("metadata", {}).get("labels", {})
    if kind in {"KafkaTopic", "KafkaConnector"} and "strimzi.io/cluster" not in labels:
        problems.append(f"{where}: label strimzi.io/cluster missing")
    if kind == "KafkaTopic":
        need(doc, "spec.topicName", str, where)
        need(doc, "spec.partitions", int, where)
        need(doc, "spec.replicas", int, where)
    elif kind == "KafkaConnector":
        need(doc, "spec.class", str, where)
        need(doc, "spec.tasksMax", int, where)
        config = need(doc, "spec.config", dict, where) or {}
        bad = [k for k, v in config.items() if not isinstance(v, (str, int, bool))]
        if bad:
            problems.append(f"{where}: non-scalar connector config {bad}")
        tables = str(config.get("table.include.list", ""))
        if not tables or "iclm_" in tables or "cdc_claims_" in tables:
            problems.append(f"{where}: table.include.list empty or captures iclm_*/cdc_claims_*: {tables}")
        if str(config.get("provide.transaction.metadata")) != "true":
            problems.append(f"{where}: provide.transaction.metadata must be true")
    elif kind == "KafkaConnect":
        need(doc, "spec.bootstrapServers", str, where)
        need(doc, "spec.replicas", int, where)
        for plugin in need(doc, "spec.build.plugins", list, where) or []:
            for artifact in plugin.get("artifacts", []):
                if artifact.get("type") not in {"jar", "tgz", "zip", "maven", "other"} or not (
                    artifact.get("url") or artifact.get("artifact")
                ):
                    problems.append(f"{where}: bad build artifact {artifact}")
    elif kind == "ServiceMonitor":
        need(doc, "spec.selector.matchLabels", dict, where)
        for endpoint in need(doc, "spec.endpoints", list, where) or []:
            if not endpoint.get("port"):
                problems.append(f"{where}: endpoint without port")
    elif kind == "PrometheusRule":
        for group in need(doc, "spec.groups", list, where) or []:
            for rule in group.get("rules", []):
                if not isinstance(rule.get("expr"), str) or not (rule.get("alert") or rule.get("record")):
                    problems.append(f"{where}: rule without alert/record + expr: {rule}")
        with open(sys.argv[3], "a", encoding="utf-8") as rules:  # for promtool
            yaml.safe_dump({"groups": doc["spec"]["groups"]}, rules)
    else:
        problems.append(f"{where}: no structural check for {kind}")


open(sys.argv[3], "w").close()
for path in sys.argv[1:3]:
    counts = {"core": 0, "crd": 0}
    with open(path, encoding="utf-8") as stream:
        docs = [d for d in yaml.safe_load_all(stream) if d]
    for doc in docs:
        where = f"{os.path.basename(path)}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        group = doc.get("apiVersion", "").rpartition("/")[0]
        if group in CRD_GROUPS:
            check_crd(doc, where)
            counts["crd"] += 1
            continue
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                problems.append(f"{where} (k8s {version}): {'.'.join(map(str, err.path))}: {err.message}")
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{where} (k8s {version}): no schema for {doc.get('apiVersion')} {doc.get('kind')}")
        counts["core"] += 1
    print(f"{os.path.basename(path)}: {counts['core']} core manifests validated strictly, "
          f"{counts['crd']} custom resources checked structurally")
for problem in problems:
    print("FAIL:", problem, file=sys.stderr)
sys.exit(1 if problems else 0)
PY

# ---------------------------------------------------------------------------------------------
step "promtool check rules"
if [[ -n "$PROMTOOL" ]]; then
    "$PROMTOOL" check rules "$OUT/rules.yaml"
else
    echo "skipped (promtool not available)"
fi

printf '\nall deployment checks passed\n'
