"""Runtime settings, read from the environment once at the edge (``CDC_CLAIMS_*``).

Nested groups use ``__``: ``CDC_CLAIMS_OPENHIM__AUTH=bearer``,
``CDC_CLAIMS_DB__PASSWORD=...``. Defaults are the usual ports on localhost and the user names
of ``kafka/mariadb/grants.sql``; no password has a default (a role that needs one and lacks it
stops with :class:`~cdc_claims.errors.ConfigError` naming the variable). Secrets are
:class:`~pydantic.SecretStr` so they never print. The local stack's values: ``dev/cdc_dev/credentials.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: What one claim covers: an encounter, or a whole visit (``SettleSettings.mode``). Defined here,
#: at the bottom of the package, because every stage from settle to the ledger speaks of it.
UnitKind = Literal["encounter", "visit"]


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    #: Debezium ``topic.prefix``; data topics are ``<prefix>.<database>.<table>``.
    topic_prefix: str = "openmrs"
    database: str = "openmrs"
    group_id: str = "cdc-claims"
    claims_topic: str = "cdc-claims.claims"  # audit Bundles (Claim + Patient, Encounter, ...)
    reply_topic: str = "cdc-claims.replies"  # normalized ClaimResponses, keyed by claim code
    held_topic: str = "cdc-claims.held"  # not-claimable units, with reasons
    dead_letter_topic: str = "cdc-claims.dlq"  # records we could not parse
    #: how often the consumer refreshes topic metadata: Debezium creates a table's topic at its
    #: first row, and a consumer subscribed before then only sees it at the next refresh
    metadata_max_age_ms: int = Field(default=10000, ge=1000)
    #: a consumer with no assignment, or whose partitions have lag while its position does not
    #: move, for this long rebuilds itself (rejoins the group) and is not ready meanwhile
    stall_seconds: float = Field(default=60.0, ge=5)

    @property
    def transaction_topic(self) -> str:
        return f"{self.topic_prefix}.transaction"

    def table_topic(self, table: str) -> str:
        return f"{self.topic_prefix}.{self.database}.{table}"


class DatabaseSettings(BaseModel):
    """OpenMRS database. The reader user has SELECT only; the writer user may also write
    ``iclm_*`` and the sidecar's own ``cdc_claims_*`` tables."""

    host: str = "127.0.0.1"
    port: int = 3306
    name: str = "openmrs"
    user: str = "cdc_reader"
    password: SecretStr | None = None  # CDC_CLAIMS_DB__PASSWORD
    writer_user: str = "cdc_writer"
    writer_password: SecretStr | None = None  # CDC_CLAIMS_DB__WRITER_PASSWORD
    connect_timeout: float = 5.0
    #: CA certificate of the database server: when set, connections use TLS and verify the
    #: server against it; when unset, TLS is not attempted (a database on the pod network).
    tls_ca: Path | None = None


class OpenHimSettings(BaseModel):
    """openHIM channel in front of openIMIS's FHIR R4 API."""

    #: openHIM's HTTPS router port (5000) and the channel path in front of openIMIS's FHIR API
    base_url: str = "https://127.0.0.1:5000/openimis/api/api_fhir_r4/"
    auth: Literal["basic", "bearer", "custom", "mtls"] = "basic"
    username: str = "cdc-claims"
    password: SecretStr | None = None  # CDC_CLAIMS_OPENHIM__PASSWORD (basic, bearer)
    custom_token: SecretStr = SecretStr("")
    #: Bearer mode: where to obtain a JWT (OAuth2 client-credentials style form POST).
    token_url: str = ""
    client_cert: Path | None = None  # PEM certificate (mtls)
    client_key: Path | None = None  # PEM key (mtls)
    ca_bundle: Path | None = None  # extra CA to trust; verification is never switched off silently
    verify_tls: bool = True
    timeout_seconds: float = 30.0
    max_attempts: int = 5


class PayerSettings(BaseModel):
    """openIMIS's own API, read before claims are sent (``cdc_claims.payer``): pricelists, policies.

    Read-only master data and policy look-ups over openIMIS's GraphQL API with an openIMIS user of
    its own (claims never go this way: they go through openHIM). Unset ``url``: no checks, claims
    are only checked by openIMIS after they are sent.
    """

    #: openIMIS's API root (``https://openimis.example.org/api/``): ``graphql`` and
    #: ``api_fhir_r4/login/`` are under it. Empty: the checks are off.
    url: str = ""
    #: An openIMIS user with read rights on health facilities, pricelists, medical items and
    #: services, claim admins, diagnoses and policies (no claim rights needed); insurees too for
    #: ``check-mapping --openimis`` when the mapping keeps ``openimis.insuree_uuids``.
    username: str = "cdc-claims-reader"
    password: SecretStr | None = None  # CDC_CLAIMS_PAYER__PASSWORD
    #: A line not in the facility's pricelist or priced above it: hold the claim, warn (send it
    #: and log the finding) or off.
    pricelist: Literal["hold", "warn", "off"] = "hold"
    #: No policy of the insuree covers the claim's date: hold, warn or off.
    coverage: Literal["hold", "warn", "off"] = "hold"
    #: Re-read the catalogue (facilities, pricelists, items, services) this often, in the background.
    refresh_seconds: float = Field(default=900.0, ge=10)
    #: Remember an insuree's policies this long (a renewed policy is seen within it).
    policy_ttl_seconds: float = Field(default=300.0, ge=0)
    #: Re-run claims held for a payer reason (a policy or a pricelist line added in openIMIS
    #: leaves no trace in OpenMRS) this often. 0: only by hand (``rerun-held``).
    recheck_seconds: float = Field(default=600.0, ge=0)
    ca_bundle: Path | None = None  # extra CA to trust, besides the system CAs (cdc_claims.tls)
    verify_tls: bool = True
    timeout_seconds: float = 15.0

    @property
    def enabled(self) -> bool:
        return bool(self.url)


class DocumentsSettings(BaseModel):
    """Where Bahmni keeps the files of the documents a claim carries (mapping ``attachments``).

    Mount them read-only: the sidecar only reads the files the mapping attaches, when it POSTs.
    """

    #: Bahmni's patient document store (``obs.value_text`` paths are relative to it).
    dir: Path = Path("/home/bahmni/document_images")
    #: OpenMRS's complex obs directory (``<application data>/complex_obs``); None: not read.
    complex_obs_dir: Path | None = None


class SettleSettings(BaseModel):
    mode: UnitKind = "encounter"
    #: Quiet period after the last committed change before an encounter is claimed. Five
    #: minutes: most OPD edit sessions end as one claim, later additions become supplements
    #: (docs/corrections.md weighs latency against corrections).
    settle_seconds: float = Field(default=300.0, ge=0)
    #: Visit mode: claim an open visit after this long without changes (0 = only at close).
    visit_idle_seconds: float = Field(default=0.0, ge=0)


class IntakeSettings(BaseModel):
    """How much the consumer reads ahead of what it has finished (``pipeline/flow.py``).

    A backlog (a sidecar off for a week, a broker that kept records) waits in Kafka, not in
    memory: past these bounds the consumer pauses the partitions that feed the growing part
    and resumes them at half. About 10 KiB of memory per pending unit.
    """

    #: Encounters/visits waiting for their settle window or being claimed. Must exceed the
    #: encounters a hospital saves within one settle window (300 s by default), or intake pauses
    #: in normal operation (``cdc_claims_intake_paused{cause="units"}`` says so).
    max_pending_units: int = Field(default=1000, ge=10)
    #: Rows read from one data topic whose transaction END has not been read yet (that topic ran
    #: ahead of the transaction topic): the topic pauses until the ENDs catch up.
    max_rows_waiting_for_end: int = Field(default=2000, ge=100)
    #: Transaction ENDs read whose rows have not all arrived (topics behind): the transaction
    #: topic pauses until they catch up.
    max_ends_waiting_for_rows: int = Field(default=1000, ge=100)


class DeskSettings(BaseModel):
    """The claims desk (``cdc-claims run desk``): the web app billing staff fix held claims in.

    Staff sign in with a local users file (``cdc-claims desk-user``) or through OIDC (Bahmni's
    Keycloak) when ``oidc_issuer`` is set; at least one of the two is required to run it.
    """

    port: int = Field(default=8080, ge=1, le=65535)
    #: Signs the session cookie (CDC_CLAIMS_DESK__SESSION_SECRET, at least 32 characters).
    session_secret: SecretStr | None = None
    #: Local users, one ``name:pbkdf2_sha256$...`` line each (``cdc-claims desk-user NAME``).
    users_file: Path | None = None
    #: OpenID Connect provider (e.g. ``https://keycloak.example.org/realms/bahmni``): enables
    #: "Sign in with ..." on the login page.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: SecretStr | None = None  # CDC_CLAIMS_DESK__OIDC_CLIENT_SECRET
    #: The callback URL registered with the provider (``https://desk.example.org/auth/callback``);
    #: empty: derived from the request (right only when nothing rewrites the host or scheme).
    oidc_redirect_url: str = ""
    #: Session cookie only over HTTPS. Only a plain-http local stack or test sets this false.
    secure_cookies: bool = True
    page_size: int = Field(default=50, ge=5, le=500)

    @field_validator("users_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        """The chart renders an unset file as "": no file, not the current directory."""
        return None if value == "" else value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CDC_CLAIMS_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaSettings = KafkaSettings()
    db: DatabaseSettings = DatabaseSettings()
    openhim: OpenHimSettings = OpenHimSettings()
    settle: SettleSettings = SettleSettings()
    desk: DeskSettings = DeskSettings()
    intake: IntakeSettings = IntakeSettings()
    payer: PayerSettings = PayerSettings()
    documents: DocumentsSettings = DocumentsSettings()
    mapping_file: Path = Path("mapping.yaml")
    log_level: str = "INFO"
    metrics_port: int = 9464
    #: Poll openIMIS for later status changes of open claims every this many seconds.
    poll_seconds: float = 60.0
    #: An encounter changed after its claim reached openIMIS: send the lines added since in a
    #: supplementary claim ``<code>-S<n>`` (False: only report them, ``changed_after_submit``).
    #: Removed lines are never re-sent either way: they are flagged for withdrawal.
    supplements: bool = True
    #: The most claims assembled and submitted at the same time toward this payer (each waits
    #: ~0.2 s on openIMIS). The consumer starts at half and adapts within it: more while openIMIS
    #: answers as fast as before, fewer when its latency rises or it answers 5xx / times out.
    submit_concurrency: int = Field(default=4, ge=1, le=32)
    #: Longest pause between two tries of a unit that failed for a cause time or a person can
    #: fix (credentials, a missing openHIM channel, openIMIS or the database down): once the
    #: cause is fixed, claims flow again within this long. Backoff doubles up to it, jittered.
    retry_max_seconds: float = Field(default=60.0, ge=1)
    #: How long a sidecar holds a unit's submit lease (longer than the slowest POST with its
    #: retries); another sidecar waits this long at most after a crash mid-POST.
    lease_seconds: float = Field(default=300.0, ge=10)
    #: Tests only: crash the consumer at this point of the submit path (``cdc_claims.failpoints``).
    failpoint: str | None = None
