"""The sidecar's own durable state: the unit ledger and the claim history (``model``: plain data;
``store``: the pymysql adapter)."""
