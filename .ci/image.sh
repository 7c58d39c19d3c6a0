#!/usr/bin/env bash
# Build the cdc-claims image and run it, with no Docker engine and no image registry.
#
#   bash .ci/image.sh        # as root, from anywhere inside the repository; the local stack up
#
# What it does (a line per step; any failure exits non-zero with "FAIL: ..."):
#   1. tools: buildah and debootstrap (and curl) from Debian's apt when missing.
#   2. base image: `debootstrap --variant=minbase bookworm` plus Debian's python3 and
#      python3-venv (no compilers), with bookworm's updates and security updates, trimmed
#      (no apt lists, docs, man pages, locales, device nodes) and committed with buildah as
#      localhost/cdc-claims-base:<key>. <key> hashes the suite, the mirrors, the package list
#      and the function that builds the base, so changing any of them builds a new one.
#      Cached twice: the committed image stays in buildah's storage, the rootfs tarball in
#      $CACHE/image-base (re-imported in seconds if the storage was wiped). Rebuilt when older
#      than CDC_IMAGE_BASE_MAX_AGE_DAYS (7: security updates), or with CDC_IMAGE_REBUILD_BASE=1.
#   3. image: `buildah bud --isolation chroot --build-arg BASE=<that base>` of the Dockerfile.
#   4. checks, inside the image (`buildah from`, then `buildah run --isolation chroot`):
#      a. `cdc-claims --help` runs, as uid 10001 (the image's USER, and with --user);
#      b. `cdc-claims check-mapping` against the local stack's MariaDB: exit 0 or 1 (1: mapping
#         gaps found) means it ran; 2, any other code or a traceback fails;
#      c. `cdc-claims run writer` against the local stack for ~15 s, with its own consumer group
#         and its own (empty) reply topic, so it writes nothing and disturbs no test: /healthz,
#         /readyz and /metrics answer on the host, the image's HEALTHCHECK passes, SIGTERM, it
#         stops cleanly (exit 0);
#      d. no dev code (no devstack, cdc_dev, tests, dev distribution, pytest, mypy, ruff in the
#         venv; no build leftovers) and no compilers (gcc, cc, c++, make) on the PATH;
#      e. uid 10001 and a read-only root: see check_read_only_root below.
#   5. figures: base build/import time, image build time, image size.
#
# Settings (environment):
#   CDC_CI_CACHE                  cache folder (default ~/.cache/cdc-claims-ci, shared with lint-deploy.sh)
#   VENV_BIN                      the project venv's bin (default <repo>/.venv/bin): cdc-dev, python
#   CDC_IMAGE_TAG                 the image built (default localhost/cdc-claims:ci)
#   CDC_IMAGE_METRICS_PORT        the writer's metrics port during check c (default 19600)
#   CDC_IMAGE_ENV_FILE            KEY=VALUE lines (CDC_CLAIMS_*) instead of the dev stack's (see stack_env)
#   CDC_IMAGE_CA_BUNDLE           CA bundle the build's pip trusts (default: $PIP_CERT, $SSL_CERT_FILE
#                                 or $REQUESTS_CA_BUNDLE when set: a TLS-intercepting egress proxy)
#   CDC_IMAGE_BASE_MAX_AGE_DAYS, CDC_IMAGE_REBUILD_BASE=1, DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR
#
# shellcheck disable=SC2016  # single-quoted scripts run in the image or the namespace: no host expansion
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CDC_CI_CACHE:-$HOME/.cache/cdc-claims-ci}"
VENV_BIN="${VENV_BIN:-$ROOT/.venv/bin}"
IMAGE="${CDC_IMAGE_TAG:-localhost/cdc-claims:ci}"
METRICS_PORT="${CDC_IMAGE_METRICS_PORT:-19600}"
APP_UID=10001   # the Dockerfile's USER 10001:10001

BASE_REPO=localhost/cdc-claims-base
BASE_SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates   # Debian's python3 3.11, venv + pip wheels (ensurepip)
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
BASE_MAX_AGE_DAYS="${CDC_IMAGE_BASE_MAX_AGE_DAYS:-7}"

started=$(date +%s)
step() { printf '\n==> %s  [+%ss]\n' "$*" "$(( $(date +%s) - started ))"; }
info() { printf '    %s\n' "$*"; }
fail() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Clean-up: every working container this run creates (buildah rm also unmounts it), the writer
# of check c if still running, temporary folders. Runs on any exit, failures included.
WORK="$(mktemp -d /var/tmp/cdc-claims-image.XXXXXX)"
CONTAINERS=()
WRITER_PID=""
cleanup() {
    local rc=$?
    if [[ -n "$WRITER_PID" ]] && kill -0 "$WRITER_PID" 2>/dev/null; then
        kill -TERM "$(app_pid "$WRITER_PID")" 2>/dev/null || true
        sleep 2
        kill -KILL "$WRITER_PID" 2>/dev/null || true
        wait "$WRITER_PID" 2>/dev/null || true
    fi
    local ctr
    for ctr in "${CONTAINERS[@]}"; do
        [[ -n "$ctr" ]] || continue
        buildah rm "$ctr" >/dev/null 2>&1 || printf 'warning: could not remove working container %s\n' "$ctr" >&2
    done
    remove_tree "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

remove_tree() {  # remove_tree DIR: unmount anything left mounted below DIR (a failed debootstrap), then delete it
    local dir=$1 target
    [[ -d "$dir" ]] || return 0
    findmnt -rno TARGET | { grep -F "$dir/" || true; } | sort -r | while read -r target; do
        umount -l "$target" || true
    done
    rm -rf --one-file-system "$dir"
}

new_container() {  # new_container IMAGE: a working container in $CTR, removed at exit (no $(...): it records it)
    CTR=$(buildah from --pull-never --name "cdc-claims-imagecheck-$$-${#CONTAINERS[@]}" "$1") \
        || fail "buildah from $1"
    CONTAINERS+=("$CTR")
}

# =============================================================================================
# THE LOCAL STACK: the one place that knows it (adapt here when the dev stack moves).
#   stack_check  is it up? (scripts/test.sh starts it before calling this script)
#   stack_env    the CDC_CLAIMS_* a sidecar needs on it: endpoints and every credential (the
#                product has no password defaults), as KEY=VALUE lines. From CDC_IMAGE_ENV_FILE
#                when set, else from the dev stack's own helper (dev/cdc_dev/credentials.py).
#   STACK_MAPPING_DIR  mounted read-only at /etc/cdc-claims/mapping (like the chart's ConfigMap):
#                the example mapping and the ICD code list it names.
# =============================================================================================
STACK_MAPPING_DIR="$ROOT/examples"
STACK_MAPPING_FILE=mapping.yaml

stack_check() {
    [[ -n "${CDC_IMAGE_ENV_FILE:-}" ]] && return 0   # someone else's stack: their env file says where
    [[ -x "$VENV_BIN/cdc-dev" ]] || fail "$VENV_BIN/cdc-dev not found (bash scripts/bootstrap.sh; or set VENV_BIN)"
    (cd "$ROOT" && "$VENV_BIN/cdc-dev" status) | sed 's/^/    /' \
        || fail "the local stack is not up: $VENV_BIN/cdc-dev up (scripts/test.sh does it before this script)"
}

stack_env() {
    if [[ -n "${CDC_IMAGE_ENV_FILE:-}" ]]; then
        [[ -r "$CDC_IMAGE_ENV_FILE" ]] || fail "CDC_IMAGE_ENV_FILE=$CDC_IMAGE_ENV_FILE is not readable"
        grep -E '^CDC_CLAIMS_[A-Z0-9_]+=' "$CDC_IMAGE_ENV_FILE" || true
        return 0
    fi
    (cd "$ROOT" && "$VENV_BIN/python" -m cdc_dev.credentials) \
        || fail "could not get the local stack's settings from the dev stack (python -m cdc_dev.credentials)"
}
# =============================================================================================

# ---------------------------------------------------------------------------------------------
step "tools (buildah, debootstrap, curl)"
[[ $(id -u) == 0 ]] || fail "run as root: buildah's storage, debootstrap and the read-only root check need it"
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v curl >/dev/null || missing+=(curl)
if (( ${#missing[@]} )); then
    info "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >"$WORK/apt.log" 2>&1 \
        || { apt-get update -q >>"$WORK/apt.log" 2>&1 \
             && apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$WORK/apt.log" 2>&1; } \
        || { tail -n 20 "$WORK/apt.log" >&2; fail "apt-get install ${missing[*]}"; }
fi
info "buildah $(buildah version --json 2>/dev/null | sed -n 's/.*"version": "\([^"]*\)".*/\1/p' | head -n1), storage $(buildah info --format '{{.store.GraphDriverName}} in {{.store.GraphRoot}}' 2>/dev/null)"
info "debootstrap $(dpkg-query -W -f '${Version}' debootstrap 2>/dev/null || echo '?')"

# ---------------------------------------------------------------------------------------------
# The base: what `FROM ${BASE}` gets in CI. build_base is part of the cache key: edit it and the
# next run builds a new base.
build_base() {  # build_base TARBALL: debootstrap, update, trim, tar
    local tarball=$1 rootfs="$WORK/rootfs"
    local apt=(chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive LC_ALL=C apt-get -q -y -o Dpkg::Use-Pty=0)
    mkdir -p "$CACHE/debootstrap-debs"
    info "debootstrap --variant=minbase --include=$BASE_PACKAGES $BASE_SUITE ($DEBIAN_MIRROR)"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" --cache-dir="$CACHE/debootstrap-debs" \
        "$BASE_SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 30 "$WORK/debootstrap.log" >&2; fail "debootstrap (log above)"; }
    info "apt-get upgrade ($BASE_SUITE-updates, $BASE_SUITE-security)"
    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR $BASE_SUITE main
deb $DEBIAN_MIRROR $BASE_SUITE-updates main
deb $DEBIAN_SECURITY_MIRROR $BASE_SUITE-security main
EOF
    { "${apt[@]}" update && "${apt[@]}" --no-install-recommends upgrade && "${apt[@]}" clean; } \
        >"$WORK/upgrade.log" 2>&1 || { tail -n 30 "$WORK/upgrade.log" >&2; fail "apt-get upgrade in the base (log above)"; }
    grep -E '^[0-9]+ upgraded' "$WORK/upgrade.log" | sed 's/^/    /' || true
    local compilers
    compilers=$(find "$rootfs/usr/bin" -maxdepth 1 \( -name 'gcc*' -o -name cc -o -name c++ -o -name make \) -printf '%f ')
    [[ -z "$compilers" ]] || fail "the base has compilers: $compilers"
    # nothing may be mounted in there (debootstrap in a container can bind the host's /dev)
    local mounts
    mounts=$(findmnt -rno TARGET | { grep -F "$rootfs/" || true; })
    [[ -z "$mounts" ]] || fail "mounts left below $rootfs: $(echo "$mounts" | tr '\n' ' ')"
    info "trim (apt lists and caches, docs, man pages, locales, logs, device nodes, host files)"
    rm -rf "${rootfs:?}"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
        "$rootfs"/var/lib/dpkg/*-old "$rootfs"/var/log/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
        "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* "${rootfs:?}"/dev/* "$rootfs"/run/* \
        "$rootfs"/tmp/* "$rootfs"/var/tmp/* "$rootfs"/root/.[!.]* 2>/dev/null || true
    : >"$rootfs/etc/hostname"      # debootstrap copies the build host's
    : >"$rootfs/etc/resolv.conf"   # the runtime provides them
    tar --numeric-owner --xattrs -C "$rootfs" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    remove_tree "$rootfs"
}

import_base() {  # import_base TARBALL TAG: a buildah image from the rootfs tarball
    local tarball=$1 tag=$2 ctr
    ctr=$(buildah from scratch) || fail "buildah from scratch"
    CONTAINERS+=("$ctr")
    buildah add --quiet "$ctr" "$tarball" / >/dev/null || fail "buildah add $tarball"
    buildah config \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
        --cmd '["/usr/bin/python3"]' \
        --label org.opencontainers.image.title=cdc-claims-base \
        --label "org.opencontainers.image.description=Debian $BASE_SUITE minbase + $BASE_PACKAGES (debootstrap, .ci/image.sh)" \
        --label "cdc-claims.base.key=$key" \
        --label "cdc-claims.base.built=$(date -u -r "$tarball" +%s)" \
        "$ctr" || fail "buildah config"
    buildah commit --quiet --rm "$ctr" "$tag" >/dev/null || fail "buildah commit $tag"
    CONTAINERS=("${CONTAINERS[@]/$ctr}")
}

step "base image (Debian $BASE_SUITE minbase + $BASE_PACKAGES)"
key=$( { echo "$BASE_SUITE $BASE_PACKAGES $DEBIAN_MIRROR $DEBIAN_SECURITY_MIRROR"; declare -f build_base import_base; } \
    | sha256sum | cut -c1-12)
BASE="$BASE_REPO:$key"
tarball="$CACHE/image-base/$BASE_SUITE-$key.tar"
now=$(date +%s)
max_age=$(( BASE_MAX_AGE_DAYS * 86400 ))
base_t0=$(date +%s)
base_how=""
if [[ "${CDC_IMAGE_REBUILD_BASE:-0}" == 1 ]]; then
    info "CDC_IMAGE_REBUILD_BASE=1: building a fresh base"
    buildah rmi "$BASE" >/dev/null 2>&1 || true
    rm -f "$tarball"
fi
if buildah inspect --type image "$BASE" >/dev/null 2>&1; then
    built=$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "cdc-claims.base.built"}}' "$BASE")
    if (( now - ${built:-0} < max_age )); then
        base_how="reused (in buildah's storage, built $(( (now - built) / 3600 )) h ago)"
    else
        info "cached base is older than $BASE_MAX_AGE_DAYS days: rebuilding it (security updates)"
        buildah rmi "$BASE" >/dev/null 2>&1 || true
        rm -f "$tarball"
    fi
fi
if [[ -z "$base_how" ]]; then
    if [[ -f "$tarball" ]] && (( now - $(stat -c %Y "$tarball") < max_age )); then
        info "importing the cached rootfs $tarball"
        import_base "$tarball" "$BASE"
        base_how="imported from the cached tarball in $(( $(date +%s) - base_t0 ))s"
    else
        mkdir -p "$CACHE/image-base"
        rm -f "$CACHE/image-base/$BASE_SUITE-"*.tar   # the previous key's
        build_base "$tarball"
        import_base "$tarball" "$BASE"
        base_how="built in $(( $(date +%s) - base_t0 ))s (debootstrap, upgrade, import)"
    fi
fi
base_secs=$(( $(date +%s) - base_t0 ))
# older bases (another key) are dead weight in the storage
buildah images --noheading --format '{{.Name}}:{{.Tag}}' | { grep -Fx -v "$BASE" | grep "^$BASE_REPO:" || true; } \
    | while read -r old; do
        if buildah rmi "$old" >/dev/null 2>&1; then info "removed the old base $old"; fi
    done
info "$BASE: $base_how"

# ---------------------------------------------------------------------------------------------
step "image build: buildah bud --isolation chroot --build-arg BASE=$BASE"
build_args=(--isolation chroot --format docker --pull-never --build-arg "BASE=$BASE" --tag "$IMAGE"
    --file "$ROOT/Dockerfile")
# Behind a TLS-intercepting egress proxy pip must trust the proxy's CA: the host's bundle is
# bind-mounted over the base's for the RUN steps only; the image keeps Debian's own bundle.
# (Debian's pip uses the system bundle: no pip configuration needed.)
ca="${CDC_IMAGE_CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-${REQUESTS_CA_BUNDLE:-}}}}"
if [[ -n "$ca" ]]; then
    [[ -r "$ca" ]] || fail "CA bundle $ca (CDC_IMAGE_CA_BUNDLE / PIP_CERT / SSL_CERT_FILE) is not readable"
    build_args+=(--volume "$(readlink -f "$ca"):/etc/ssl/certs/ca-certificates.crt:ro")
    info "the build's pip trusts the host's CA bundle $ca"
fi
old_id=$(buildah images --quiet --no-trunc "$IMAGE" 2>/dev/null | head -n1 || true)
build_t0=$(date +%s)
buildah bud "${build_args[@]}" "$ROOT" >"$WORK/build.log" 2>&1 \
    || { tail -n 40 "$WORK/build.log" >&2; fail "buildah bud (log above)"; }
build_secs=$(( $(date +%s) - build_t0 ))
grep -E '^\[[0-9]/[0-9]\] STEP' "$WORK/build.log" | cut -c1-110 | sed 's/^/    /'
new_id=$(buildah images --quiet --no-trunc "$IMAGE" | head -n1)
if [[ -n "$old_id" && "$old_id" != "$new_id" ]]; then
    buildah rmi "$old_id" >/dev/null 2>&1 || true   # the previous build, now untagged
fi
image_size=$(buildah images --format '{{.Size}}' "$IMAGE" | head -n1)
info "$IMAGE ${new_id:7:12} built in ${build_secs}s, $image_size"
info "config: $(buildah inspect --type image --format 'user {{.OCIv1.Config.User}}, entrypoint {{.OCIv1.Config.Entrypoint}}, cmd {{.OCIv1.Config.Cmd}}, healthcheck {{if .Docker.Config.Healthcheck}}{{.Docker.Config.Healthcheck.Test}}{{else}}none{{end}}' "$IMAGE")"

# ---------------------------------------------------------------------------------------------
new_container "$IMAGE"
MAPPING_MOUNT=(--volume "$STACK_MAPPING_DIR:/etc/cdc-claims/mapping:ro")
# shellcheck disable=SC2054  # one --mount value, commas included
TMP_MOUNT=(--mount type=tmpfs,destination=/tmp)   # the chart's /tmp emptyDir
in_image() {  # in_image [buildah run options] -- CMD...: run in the working container, chroot isolation, host network
    buildah run --isolation chroot --network host "$@"
}

step "check a: cdc-claims --help as uid $APP_UID"
[[ $(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$IMAGE") == "$APP_UID:$APP_UID" ]] \
    || fail "the image's USER is not $APP_UID:$APP_UID"
whoami_default=$(in_image "$CTR" -- id -u) || fail "id -u in the image"
[[ "$whoami_default" == "$APP_UID" ]] || fail "buildah run without --user runs as uid $whoami_default, not $APP_UID"
in_image --user "$APP_UID:$APP_UID" "${TMP_MOUNT[@]}" "$CTR" -- cdc-claims --help >"$WORK/help.txt" 2>&1 \
    || { cat "$WORK/help.txt" >&2; fail "cdc-claims --help"; }
grep -q '^usage: cdc-claims' "$WORK/help.txt" || { cat "$WORK/help.txt" >&2; fail "cdc-claims --help printed no usage"; }
info "ok: uid $whoami_default by default; $(in_image "$CTR" -- cdc-claims --version 2>&1 | head -n1)"

step "check b: cdc-claims check-mapping against the local stack's MariaDB"
stack_check
stack_env_text=$(stack_env)
ENV_ARGS=()
STACK_ENV=()
while IFS= read -r line; do
    [[ -n "$line" ]] || continue
    ENV_ARGS+=(--env "$line")
    STACK_ENV+=("$line")
done <<<"$stack_env_text"
(( ${#STACK_ENV[@]} )) || fail "no CDC_CLAIMS_* settings for the local stack (stack_env)"
ENV_ARGS+=(--env "CDC_CLAIMS_MAPPING_FILE=/etc/cdc-claims/mapping/$STACK_MAPPING_FILE")
info "settings: $(printf '%s\n' "${STACK_ENV[@]}" | sed -E 's/(PASSWORD|TOKEN|SECRET)([A-Z_]*)=.*/\1\2=***/' | cut -d= -f1-2 | tr '\n' ' ')"
check_mapping_rc=0
in_image --user "$APP_UID:$APP_UID" "${TMP_MOUNT[@]}" "${MAPPING_MOUNT[@]}" "${ENV_ARGS[@]}" "$CTR" \
    -- cdc-claims check-mapping >"$WORK/check-mapping.txt" 2>&1 || check_mapping_rc=$?
grep -v -e '^subprocess exited with status' -e '^Error: exit status' "$WORK/check-mapping.txt" | sed -n 's/^/    | /; 1,12p' || true
if grep -q 'Traceback (most recent call last)' "$WORK/check-mapping.txt" || (( check_mapping_rc > 1 )); then
    fail "cdc-claims check-mapping exited $check_mapping_rc (0: mapping complete, 1: gaps found; anything else is a failure)"
fi
info "ok: exit $check_mapping_rc ($([[ $check_mapping_rc == 0 ]] && echo 'mapping complete' || echo 'ran; mapping gaps found'))"

# ---------------------------------------------------------------------------------------------
step "check c: cdc-claims run writer against the local stack (own group, own reply topic), SIGTERM"
http_get() { curl -fsS --max-time 3 "http://127.0.0.1:$METRICS_PORT$1" 2>/dev/null; }
app_pid() {  # app_pid PID: the cdc-claims process (uid 10001) below the buildah run process PID
    local pid child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        if [[ $(ps -o uid= -p "$child" | tr -d ' ') == "$APP_UID" && $(cat "/proc/$child/comm" 2>/dev/null) == cdc-claims ]]; then
            echo "$child"; return 0
        fi
        pid=$(app_pid "$child") && { echo "$pid"; return 0; }
    done
    return 1
}
if (exec 3<>"/dev/tcp/127.0.0.1/$METRICS_PORT") 2>/dev/null; then
    fail "port $METRICS_PORT is already in use (CDC_IMAGE_METRICS_PORT picks another)"
fi
group=cdc-claims-imagecheck
in_image --user "$APP_UID:$APP_UID" "${TMP_MOUNT[@]}" "${MAPPING_MOUNT[@]}" "${ENV_ARGS[@]}" \
    --env "CDC_CLAIMS_KAFKA__GROUP_ID=$group" \
    --env "CDC_CLAIMS_KAFKA__REPLY_TOPIC=$group.replies" \
    --env "CDC_CLAIMS_METRICS_PORT=$METRICS_PORT" \
    "$CTR" -- cdc-claims run writer >"$WORK/writer.log" 2>&1 &
WRITER_PID=$!
writer_t0=$(date +%s)
writer_fail() { sed 's/^/    | /' "$WORK/writer.log" | tail -n 30 >&2; fail "$*"; }
healthy="" ready=""
while (( $(date +%s) - writer_t0 < 90 )); do
    kill -0 "$WRITER_PID" 2>/dev/null || writer_fail "the writer exited before it was ready (log above)"
    [[ -n "$healthy" ]] || { http_get /healthz >/dev/null && healthy=$(( $(date +%s) - writer_t0 )); }
    [[ -n "$healthy" ]] && http_get /readyz >/dev/null && { ready=$(( $(date +%s) - writer_t0 )); break; }
    sleep 1
done
[[ -n "$healthy" ]] || writer_fail "/healthz did not answer 200 on 127.0.0.1:$METRICS_PORT within 90 s"
[[ -n "$ready" ]] || writer_fail "/readyz did not answer 200 within 90 s: $(curl -sS --max-time 3 "http://127.0.0.1:$METRICS_PORT/readyz" 2>&1)"
info "/healthz 200 after ${healthy}s, /readyz 200 after ${ready}s"
while (( $(date +%s) - writer_t0 < 15 )); do sleep 1; done   # let it run a while, then ask again
health=$(http_get /healthz) || writer_fail "/healthz stopped answering"
readiness=$(http_get /readyz) || writer_fail "/readyz no longer 200: $(curl -sS --max-time 3 "http://127.0.0.1:$METRICS_PORT/readyz" 2>&1)"
metrics=$(http_get /metrics) || writer_fail "/metrics did not answer 200"
metric_count=$(grep -c '^cdc_claims_' <<<"$metrics" || true)
(( metric_count > 0 )) || writer_fail "/metrics has no cdc_claims_* sample"
info "after $(( $(date +%s) - writer_t0 ))s: /healthz '$health', /readyz '$readiness', /metrics $metric_count cdc_claims_* samples"
# the image's own HEALTHCHECK command, run in the image next to the writer
mapfile -t healthcheck < <(buildah inspect --type image --format '{{range .Docker.Config.Healthcheck.Test}}{{println .}}{{end}}' "$IMAGE")
[[ ${healthcheck[0]:-} == CMD ]] || writer_fail "the image has no HEALTHCHECK CMD (built with --format docker?)"
in_image --user "$APP_UID:$APP_UID" --env "CDC_CLAIMS_METRICS_PORT=$METRICS_PORT" "$CTR" -- "${healthcheck[@]:1}" \
    || writer_fail "the image's HEALTHCHECK command failed against the running writer"
info "the image's HEALTHCHECK (${healthcheck[1]} -c ...) passes"
# SIGTERM to the role itself, as the kubelet sends it: buildah run does not forward signals
# (it kills its child), so the signal goes to the cdc-claims process below it.
pid=$(app_pid "$WRITER_PID") || writer_fail "cannot find the writer's process (uid $APP_UID) below buildah run"
kill -TERM "$pid"
stop_t0=$(date +%s)
while kill -0 "$WRITER_PID" 2>/dev/null && (( $(date +%s) - stop_t0 < 30 )); do sleep 0.5; done
kill -0 "$WRITER_PID" 2>/dev/null && writer_fail "the writer did not stop within 30 s of SIGTERM"
writer_rc=0
wait "$WRITER_PID" || writer_rc=$?
WRITER_PID=""
(( writer_rc == 0 )) || writer_fail "the writer exited $writer_rc after SIGTERM (expected 0)"
grep -q '"role_stopped"' "$WORK/writer.log" || writer_fail "the writer's log has no role_stopped"
! grep -q 'Traceback (most recent call last)' "$WORK/writer.log" || writer_fail "traceback in the writer's log"
info "ok: stopped cleanly (exit 0, role_stopped) $(( $(date +%s) - stop_t0 ))s after SIGTERM"

# ---------------------------------------------------------------------------------------------
step "check d: no dev code, no compilers"
MNT=$(buildah mount "$CTR") || fail "buildah mount"
site=$(compgen -G "$MNT/opt/cdc-claims/lib/python3*/site-packages" | head -n1) || true
[[ -n "$site" && -d "$site/cdc_claims" ]] || fail "no cdc_claims in the image's venv ($MNT/opt/cdc-claims)"
dev_code=$(
    cd "$site"
    find . \( -name devstack -o -name cdc_dev -o -name 'cdc_claims_dev*' \) -print
    find . -maxdepth 1 \( -name tests -o -name 'tests.py' \) -print
    find ./cdc_claims \( -name tests -o -name 'test_*.py' -o -name conftest.py \) -print
    find . -maxdepth 1 -iname '*.dist-info' | grep -iE '/(pytest|mypy|ruff|hadolint|types_)[^/]*$' || true
    for leftover in /src /wheels /root/.cache/pip; do [[ -e "$MNT$leftover" ]] && echo "$leftover"; done
    true
)
[[ -z "$dev_code" ]] || fail "dev code or build leftovers in the image: $(echo "$dev_code" | tr '\n' ' ')"
info "ok: site-packages has no devstack, cdc_dev, tests, pytest, mypy, ruff; no /src, /wheels"
compilers=$(in_image --user "$APP_UID:$APP_UID" "$CTR" -- sh -c \
    'for c in gcc cc c++ g++ clang make; do command -v "$c" || true; done') || fail "PATH check in the image"
[[ -z "$compilers" ]] || fail "compilers in the image: $(echo "$compilers" | tr '\n' ' ')"
info "ok: no gcc, cc, c++, g++, clang, make on the image's PATH"
info "venv: $(find "$site" -maxdepth 1 -name '*.dist-info' -printf '%f\n' | sed 's/-[0-9].*//' | sort | tr '\n' ' ')"

# ---------------------------------------------------------------------------------------------
# Read-only root. `buildah run --isolation chroot` has no read-only root: a read-only bind over
# the container's rootfs makes it fail (it creates /run/.containerenv and other mount points in
# the rootfs on every run). So two checks:
#   e1. with buildah run, as uid 10001: writing to / and /opt fails, /tmp (a tmpfs, the chart's
#       emptyDir) works, and `find / -xdev -writable` finds nothing else writable but the
#       empty world-writable sticky dirs every Debian image has (/var/tmp, /run/lock), which a
#       read-only root (the chart's readOnlyRootFilesystem) covers.
#   e2. a truly read-only root, without buildah run: in a private mount namespace (unshare) the
#       container's rootfs is bind-mounted read-only, with /proc, a tmpfs /tmp and the mapping,
#       and chroot'ed into. Even root cannot write there (EROFS), and `cdc-claims
#       check-mapping` runs as uid 10001 against the local stack. Nothing leaks: the mounts die
#       with the namespace.
check_read_only_root() {
    local out
    out=$(in_image --user "$APP_UID:$APP_UID" "${TMP_MOUNT[@]}" "$CTR" -- sh -c '
        for p in / /opt /opt/cdc-claims /opt/cdc-claims/bin /etc /usr; do
            touch "$p/.cdc-claims-w" 2>/dev/null && echo "writable: $p"
        done
        touch /tmp/.cdc-claims-w || echo "not writable: /tmp"
        find / -xdev \( -type f -o -type d \) -writable -print 2>/dev/null | while read -r p; do
            case "$p" in
                /tmp) ;;
                /var/tmp|/run/lock) [ -k "$p" ] && [ -z "$(ls -A "$p")" ] || echo "writable: $p" ;;
                *) echo "writable: $p" ;;
            esac
        done') || fail "read-only check in the image"
    [[ -z "$out" ]] || fail "uid $APP_UID can write outside /tmp: $(echo "$out" | tr '\n' ' ')"
    info "e1 ok: as uid $APP_UID nothing outside /tmp is writable (bar the empty sticky /var/tmp, /run/lock)"

    local image_env=()
    mapfile -t image_env < <(buildah inspect --type image --format '{{range .OCIv1.Config.Env}}{{println .}}{{end}}' "$IMAGE" | grep .)
    mkdir -p "$MNT/etc/cdc-claims/mapping"   # the mount point, in this working container only
    ro_root() {  # ro_root USER CMD...: CMD in the image's filesystem as a read-only root
        unshare --mount --propagation private -- bash -euc '
            r=$1 maps=$2 user=$3; shift 3
            mount --bind "$r" "$r"; mount -o remount,bind,ro "$r"
            mount -t proc proc "$r/proc"
            mount -t tmpfs -o mode=1777,nosuid,nodev,size=64m tmpfs "$r/tmp"
            mount -t tmpfs -o mode=755,nosuid,size=1m tmpfs "$r/dev"
            for d in null zero full random urandom; do : >"$r/dev/$d"; mount --bind "/dev/$d" "$r/dev/$d"; done
            mount --bind "$maps" "$r/etc/cdc-claims/mapping"; mount -o remount,bind,ro "$r/etc/cdc-claims/mapping"
            exec chroot --userspec="$user" "$r" "$@"
        ' ro-root "$MNT" "$STACK_MAPPING_DIR" "$@"
    }
    out=$(ro_root 0:0 /bin/sh -c '
        for p in / /opt/cdc-claims /etc /var/tmp /run/lock /usr; do
            touch "$p/.cdc-claims-w" 2>/dev/null && echo "writable: $p"
        done
        touch /tmp/.cdc-claims-w || echo "not writable: /tmp"
        grep -q " / [a-z]* ro[ ,]" /proc/mounts || echo "/ is not mounted read-only"') \
        || fail "the read-only root run (unshare + chroot) failed: $out"
    [[ -z "$out" ]] || fail "read-only root: $(echo "$out" | tr '\n' ' ')"
    local rc=0
    ro_root "$APP_UID:$APP_UID" /usr/bin/env -i "${image_env[@]}" "${STACK_ENV[@]}" \
        "CDC_CLAIMS_MAPPING_FILE=/etc/cdc-claims/mapping/$STACK_MAPPING_FILE" \
        cdc-claims check-mapping >"$WORK/ro-check-mapping.txt" 2>&1 || rc=$?
    if grep -q 'Traceback (most recent call last)' "$WORK/ro-check-mapping.txt" || (( rc > 1 )); then
        sed 's/^/    | /' "$WORK/ro-check-mapping.txt" | tail -n 20 >&2
        fail "check-mapping on a read-only root exited $rc"
    fi
    info "e2 ok: on a truly read-only root even root cannot write outside /tmp; check-mapping as uid $APP_UID exits $rc there"
}
step "check e: uid $APP_UID, read-only root"
check_read_only_root

# ---------------------------------------------------------------------------------------------
step "figures"
printf '    base image    %s: %s\n' "$BASE" "$base_how"
printf '    base time     %ss\n' "$base_secs"
printf '    base size     %s\n' "$(buildah images --format '{{.Size}}' "$BASE" | head -n1)"
printf '    image build   %ss (buildah bud --isolation chroot)\n' "$build_secs"
printf '    image size    %s (%s)\n' "$image_size" "$IMAGE"
printf '    checks        help, check-mapping (exit %s), writer (ready in %ss, clean SIGTERM), no dev code, no compilers, uid %s, read-only root\n' \
    "$check_mapping_rc" "$ready" "$APP_UID"
printf '    total         %ss\n' "$(( $(date +%s) - started ))"
printf '\nimage checks passed\n'
