-- Least-privilege grants the local stack applies at every `cdc-dev up` (after the ledger schema).
-- The passwords here are the dev-stack defaults (= user name, as for every dev user); production
-- sets its own (docs/runbook.md has the production statements).
--
-- Debezium MariaDB connector user (verified on MariaDB 10.11.19, Debezium 3.5.0.Final).
--   SELECT                 snapshot reads (restricted to the openmrs schema)
--   RELOAD                 FLUSH TABLES WITH READ LOCK during the snapshot (snapshot.locking.mode=minimal)
--   SHOW DATABASES         schema discovery
--   REPLICATION SLAVE      read the binlog (MariaDB also calls it REPLICATION REPLICA)
--   BINLOG MONITOR         SHOW MASTER STATUS / SHOW BINARY LOGS (the 10.5+ name of REPLICATION CLIENT)
-- No LOCK TABLES (only snapshot.locking.mode=extended needs it). RELOAD, SHOW DATABASES, REPLICATION
-- SLAVE and BINLOG MONITOR are global privileges and can only be granted ON *.*.
CREATE USER IF NOT EXISTS 'debezium'@'%' IDENTIFIED BY 'debezium';
GRANT RELOAD, SHOW DATABASES, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'debezium'@'%';
GRANT SELECT ON openmrs.* TO 'debezium'@'%';

-- The sidecar's writer user: its rights on the other iclm_* and cdc_claims_* tables (SELECT,
-- INSERT, UPDATE, never DELETE) are granted table by table by dev/cdc_dev/mariadb.py. The audit
-- of operator actions is append-only: the writer may add rows and read them, never change or
-- remove one, so who re-ran or resubmitted a claim cannot be rewritten by the sidecar itself.
CREATE USER IF NOT EXISTS 'cdc_writer'@'%' IDENTIFIED BY 'cdc_writer';
GRANT SELECT, INSERT ON openmrs.cdc_claims_action TO 'cdc_writer'@'%';
