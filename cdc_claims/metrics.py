"""Prometheus metrics: every name the sidecar exports, defined once.

Names follow Prometheus conventions (``cdc_claims_`` prefix, ``_total`` counters, base units
in seconds). The Grafana dashboard and the PrometheusRule alerts in ``helm/`` use exactly
these names; a test checks that they do.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)

CHANGE_EVENTS = Counter("cdc_claims_change_events_consumed_total", "Debezium change events consumed", ["table"])
TRANSACTIONS = Counter("cdc_claims_transactions_completed_total", "Source transactions seen complete (END)")


@dataclass(frozen=True)
class ClaimMetrics:
    """The claim service's counters, handed to it rather than reached for: a test gives it a
    set on a registry of its own and reads exactly what one run counted."""

    built: Counter
    submitted: Counter
    accepted: Counter
    rejected: Counter
    held: Counter
    lines_rejected: Counter
    nothing_to_claim: Counter
    withdrawals_needed: Counter
    status_not_applied: Counter
    lease_conflicts: Counter


def claim_metrics(registry: CollectorRegistry = REGISTRY) -> ClaimMetrics:
    """Define the claim counters on ``registry`` (the default one exactly once, below)."""
    return ClaimMetrics(
        built=Counter("cdc_claims_claims_built_total", "Claims assembled and validated", ["unit"], registry=registry),
        submitted=Counter(
            "cdc_claims_claims_submitted_total", "Claims POSTed to openIMIS through openHIM", registry=registry
        ),
        accepted=Counter(
            "cdc_claims_claims_accepted_total",
            "Claims openIMIS accepted (entered/checked or later)",
            ["status"],
            registry=registry,
        ),
        rejected=Counter("cdc_claims_claims_rejected_total", "Claims openIMIS rejected (status 1)", registry=registry),
        held=Counter("cdc_claims_claims_held_total", "Claims held as not claimable", ["reason"], registry=registry),
        lines_rejected=Counter(
            "cdc_claims_claim_lines_rejected_total", "Claim lines openIMIS rejected", ["reason_code"], registry=registry
        ),
        nothing_to_claim=Counter(
            "cdc_claims_units_nothing_to_claim_total",
            "Encounters/visits with nothing billable (not held)",
            ["unit"],
            registry=registry,
        ),
        withdrawals_needed=Counter(
            "cdc_claims_withdrawals_needed_total",
            "Claims (or lines) in openIMIS that must be withdrawn",
            ["reason"],
            registry=registry,
        ),
        status_not_applied=Counter(
            "cdc_claims_status_not_applied_total",
            "openIMIS statuses recorded but not applied (backward, unknown code, unreadable)",
            ["kind"],
            registry=registry,
        ),
        lease_conflicts=Counter(
            "cdc_claims_lease_conflicts_total",
            "Units another sidecar was submitting (waited for, not POSTed twice)",
            registry=registry,
        ),
    )


CLAIM = claim_metrics()
CLAIMS_BUILT = CLAIM.built
CLAIMS_SUBMITTED = CLAIM.submitted
CLAIMS_ACCEPTED = CLAIM.accepted
CLAIMS_REJECTED = CLAIM.rejected
CLAIMS_HELD = CLAIM.held
CLAIM_LINES_REJECTED = CLAIM.lines_rejected
UNITS_NOTHING_TO_CLAIM = CLAIM.nothing_to_claim
WITHDRAWALS_NEEDED = CLAIM.withdrawals_needed
STATUS_NOT_APPLIED = CLAIM.status_not_applied
LEASE_CONFLICTS = CLAIM.lease_conflicts
CLAIMS_HELD_CURRENT = Gauge("cdc_claims_held_claims", "Claims currently held (ledger rows), by reason", ["reason"])
SUBMIT_LATENCY = Histogram(
    "cdc_claims_submit_duration_seconds", "Duration of one claim POST through openHIM", buckets=LATENCY_BUCKETS
)
END_TO_END_LATENCY = Histogram(
    "cdc_claims_end_to_end_latency_seconds",
    "From the source database commit to the billing row written",
    buckets=LATENCY_BUCKETS,
)
CONSUMER_LAG = Gauge("cdc_claims_consumer_lag_records", "Records behind the log end", ["topic", "partition"])
DEAD_LETTERS = Counter("cdc_claims_dead_letters_total", "Records sent to the dead-letter topic", ["reason"])
UPSTREAM_ERRORS = Counter("cdc_claims_upstream_errors_total", "openHIM/openIMIS errors by kind", ["kind"])
REPLIES_WRITTEN = Counter("cdc_claims_replies_written_total", "ClaimResponses applied to the iclm_* tables", ["status"])
PENDING_UNITS = Gauge("cdc_claims_pending_units", "Encounters/visits waiting for their settle window")
SUBMIT_LIMIT = Gauge(
    "cdc_claims_submit_concurrency_limit",
    "Claims the consumer lets run at once now: adapts to openIMIS's latency and overloads, up to "
    "CDC_CLAIMS_SUBMIT_CONCURRENCY",
)
INTAKE_PAUSED = Gauge(
    "cdc_claims_intake_paused",
    "1 while flow control holds a backlog in Kafka, by the load that is high: units (pending units), "
    "rows (rows waiting for their transaction END), ends (ENDs waiting for their rows)",
    ["cause"],
)
UPSTREAM_FAILING = Gauge(
    "cdc_claims_upstream_failing",
    "1 while a dependency keeps refusing us, by dependency and cause (auth, unreachable, no_channel...)",
    ["dependency", "cause"],
)
UNIT_RETRIES = Counter("cdc_claims_unit_retries_total", "Units put back for a later retry, by reason", ["reason"])
KAFKA_ERRORS = Counter("cdc_claims_kafka_errors_total", "Kafka operations that failed and were retried", ["op"])
CONSUMER_REBUILDS = Counter(
    "cdc_claims_consumer_rebuilds_total", "Kafka consumers closed and rebuilt (stall, lost membership)", ["cause"]
)
REBALANCES = Counter("cdc_claims_rebalances_total", "Partition assignments received or revoked", ["event"])
PAYER_CHECKS = Counter(
    "cdc_claims_payer_checks_total",
    "Checks of a claim against openIMIS before it is sent, by check and outcome (pass, hold, warn, skipped)",
    ["check", "outcome"],
)
PAYER_LOOKUP_LATENCY = Histogram(
    "cdc_claims_payer_lookup_seconds",
    "Time to read from openIMIS's GraphQL API (the catalogue, or one insuree's policies)",
    ["what"],
    buckets=LATENCY_BUCKETS,
)
PAYER_CATALOGUE_AGE = Gauge(
    "cdc_claims_payer_catalogue_age_seconds", "Age of the openIMIS catalogue the pricelist check uses"
)
