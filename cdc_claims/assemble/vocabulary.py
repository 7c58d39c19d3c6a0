"""Bahmni/OpenMRS metadata that the reader looks for when the mapping file names none.

These are facts about the OpenMRS database (the name Bahmni gives its ICD-10 concept source,
the uuid of its ``Operative Notes, Procedure`` question), not about openIMIS or the mapping.
They live on the reading side so that :mod:`cdc_claims.assemble` needs nothing from
:mod:`cdc_claims.mapping`: the mapping file's defaults (:mod:`cdc_claims.mapping.model`) and
the reader's (:class:`~cdc_claims.assemble.reader.ReaderConfig`) both come from here, and
imports run one way, mapping -> assemble, as the data does.
"""

from __future__ import annotations

#: Names the ICD-10 concept source goes by in Bahmni distributions.
DEFAULT_ICD_SOURCE_NAMES = ("ICD 10 - WHO", "ICD-10-WHO")
#: The ``Operative Notes, Procedure`` question: its coded answers are procedures performed.
OPERATIVE_NOTES_PROCEDURE = "243d25b1-9d6e-4883-86f0-ed3a34c83ab4"
