"""cdc-claims: Bahmni/OpenMRS encounters to openIMIS FHIR R4 Claims, driven by Debezium CDC.

The data path reads top to bottom in the package layout::

    capture -> settle -> assemble -> mapping -> claim -> submit -> reply -> writeback

``capture``/``settle``/``assemble.model``/``claim``/``reply`` are a pure core (no I/O);
``assemble.reader``, ``submit``, ``writeback``, ``ledger`` and ``pipeline`` are thin adapters.
"""

__version__ = "0.1.0"
