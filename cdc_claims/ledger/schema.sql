-- cdc_claims_ledger: the sidecar's own durable claim state, one row per claimable unit
-- (an encounter or a visit). Idempotent DDL for MariaDB 10.5+ / MySQL 8: safe to run at every start.
-- Billing staff may read it: `state`, `reason` and `detail` say where each claim stands and why
-- it is held. No patient names or insurance numbers are stored here, only uuids.
--   state  : a cdc_claims.lifecycle.State value (detected, settled, held, nothing_to_claim,
--            cancelled, submitting, failed, rejected, entered, checked, processed, valuated,
--            unknown_status)
--   reason : a cdc_claims.errors.HELD_REASONS key when held/failed, or a flag on a submitted
--            claim (voided_after_submit: withdraw it in openIMIS), else NULL
--   last_error : the last thing that went wrong and was not applied (a backward status from
--            openIMIS, an unreadable response, a retry cause)
--   lease_owner / lease_until : the submit lease. A sidecar claims the row by compare-and-set
--            before it POSTs, so two sidecars (a rolling update, a zombie after a rebalance)
--            never POST the same claim code at once
CREATE TABLE IF NOT EXISTS cdc_claims_ledger (
  ledger_id            BIGINT       NOT NULL AUTO_INCREMENT,
  unit_kind            VARCHAR(16)  NOT NULL,
  unit_uuid            CHAR(38)     NOT NULL,
  claim_code           VARCHAR(64)  NULL,
  revision             INT          NOT NULL DEFAULT 0,
  content_hash         VARCHAR(128) NOT NULL DEFAULT '',
  state                VARCHAR(32)  NOT NULL,
  reason               VARCHAR(64)  NULL,
  detail               TEXT         NULL,
  attempts             INT          NOT NULL DEFAULT 0,
  patient_uuid         CHAR(38)     NULL,
  visit_uuid           CHAR(38)     NULL,
  encounter_uuids      TEXT         NULL,
  openimis_claim_uuid  VARCHAR(64)  NULL,
  last_error           TEXT         NULL,
  draft_json           MEDIUMTEXT   NULL,  -- the claim as last sent (the poller normalizes later responses against it)
  lease_owner          VARCHAR(128) NULL,
  lease_until          DATETIME(6)  NULL,
  created_at           DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  updated_at           DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  PRIMARY KEY (ledger_id),
  UNIQUE KEY cdc_claims_ledger_unit (unit_kind, unit_uuid),
  UNIQUE KEY cdc_claims_ledger_code (claim_code),
  KEY cdc_claims_ledger_state (state, updated_at),
  KEY cdc_claims_ledger_visit (visit_uuid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

-- Tables created before the submit lease (MariaDB 10.5+; on MySQL 8 run the two ADD COLUMNs once
-- without IF NOT EXISTS, see docs/runbook.md).
ALTER TABLE cdc_claims_ledger ADD COLUMN IF NOT EXISTS lease_owner VARCHAR(128) NULL;
ALTER TABLE cdc_claims_ledger ADD COLUMN IF NOT EXISTS lease_until DATETIME(6) NULL;

-- cdc_claims_claim: one row per claim sent to openIMIS (the original, each supplement, each
-- replacement), linked to its encounter or visit. The poller follows every open one; the diff
-- of a changed unit compares its content with all of them. ``withdrawal`` lists the lines of
-- this claim that must be withdrawn in openIMIS (JSON: {line source uuid: {"quantity", "why"}},
-- or {"*": ...} for the whole claim), until openIMIS rejects them or staff mark them handled.
CREATE TABLE IF NOT EXISTS cdc_claims_claim (
  claim_id             BIGINT       NOT NULL AUTO_INCREMENT,
  claim_code           VARCHAR(64)  NOT NULL,
  unit_kind            VARCHAR(16)  NOT NULL,
  unit_uuid            CHAR(38)     NOT NULL,
  kind                 VARCHAR(16)  NOT NULL,  -- original | supplement | replacement
  seq                  INT          NOT NULL DEFAULT 0,
  related_code         VARCHAR(64)  NULL,
  state                VARCHAR(32)  NOT NULL,
  content_hash         VARCHAR(128) NOT NULL DEFAULT '',
  draft_json           MEDIUMTEXT   NULL,
  openimis_claim_uuid  VARCHAR(64)  NULL,
  reason               VARCHAR(64)  NULL,
  detail               TEXT         NULL,
  last_error           TEXT         NULL,
  withdrawal           TEXT         NULL,
  rejected_lines       TEXT         NULL,  -- source uuids of lines openIMIS rejected (comma-separated)
  created_at           DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  updated_at           DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  PRIMARY KEY (claim_id),
  UNIQUE KEY cdc_claims_claim_code (claim_code),
  KEY cdc_claims_claim_unit (unit_kind, unit_uuid),
  KEY cdc_claims_claim_state (state, updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

-- Claims sent before the history existed: their ledger row is their original (idempotent).
INSERT IGNORE INTO cdc_claims_claim (claim_code, unit_kind, unit_uuid, kind, seq, state, content_hash, draft_json,
                                     openimis_claim_uuid)
SELECT claim_code, unit_kind, unit_uuid, 'original', revision, state, content_hash, draft_json, openimis_claim_uuid
  FROM cdc_claims_ledger
 WHERE claim_code IS NOT NULL AND draft_json IS NOT NULL
   AND state IN ('submitting', 'entered', 'checked', 'processed', 'valuated', 'rejected', 'unknown_status');

-- cdc_claims_action: who did what, from the desk or the command line, and what it came to. One
-- row per operator action (re-run, resubmit, refresh, withdrawal handled), append-only: the
-- writer user may INSERT and SELECT it, never UPDATE or DELETE (kafka/mariadb/grants.sql).
--   at     : when, UTC (written by the sidecar as UTC_TIMESTAMP(3), whatever the server's zone)
--   actor  : the signed-in desk user, or the CLI's --by (default: the OS user)
--   action : rerun | rerun-held | resubmit | refresh | withdrawal-handled
--   target : the unit uuid (rerun, resubmit), the claim code (refresh, withdrawal-handled), or the
--            filter of a bulk re-run
--   ok     : 1 when nothing is left for a person to do, 0 otherwise
--   message: what the action answered, as shown to the person who asked
CREATE TABLE IF NOT EXISTS cdc_claims_action (
  id                   BIGINT        NOT NULL AUTO_INCREMENT,
  at                   DATETIME(3)   NOT NULL,
  actor                VARCHAR(190)  NOT NULL,
  action               VARCHAR(40)   NOT NULL,
  target               VARCHAR(190)  NOT NULL,
  ok                   TINYINT       NOT NULL,
  message              VARCHAR(2000) NOT NULL DEFAULT '',
  PRIMARY KEY (id),
  KEY cdc_claims_action_at (at),
  KEY cdc_claims_action_target (target, at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
