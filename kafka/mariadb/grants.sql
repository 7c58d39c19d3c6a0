-- Debezium MariaDB connector user, least privilege (verified on MariaDB 10.11.19, Debezium 3.5.0.Final).
--   SELECT                 snapshot reads (restricted to the openmrs schema)
--   RELOAD                 FLUSH TABLES WITH READ LOCK during the snapshot (snapshot.locking.mode=minimal)
--   SHOW DATABASES         schema discovery
--   REPLICATION SLAVE      read the binlog (MariaDB also calls it REPLICATION REPLICA)
--   BINLOG MONITOR         SHOW MASTER STATUS / SHOW BINARY LOGS (the 10.5+ name of REPLICATION CLIENT)
-- No LOCK TABLES (only snapshot.locking.mode=extended needs it). RELOAD, SHOW DATABASES, REPLICATION
-- SLAVE and BINLOG MONITOR are global privileges and can only be granted ON *.*.
-- The password here is the dev-stack default (= user name, as for every dev user); production sets its own.
CREATE USER IF NOT EXISTS 'debezium'@'%' IDENTIFIED BY 'debezium';
GRANT RELOAD, SHOW DATABASES, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'debezium'@'%';
GRANT SELECT ON openmrs.* TO 'debezium'@'%';
