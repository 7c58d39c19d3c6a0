"""What the OpenMRS reader must look for, taken from the mapping file.

The reader (:mod:`cdc_claims.assemble.reader`) knows nothing of the mapping file: it takes a
plain :class:`~cdc_claims.assemble.reader.ReaderConfig`. Building that config from a
:class:`~cdc_claims.mapping.model.ClaimMapping` is the mapping's job, so the import runs
mapping -> assemble, the way the data flows (rows are read, then mapped), and never back.
"""

from __future__ import annotations

from cdc_claims.assemble.reader import ReaderConfig
from cdc_claims.mapping.model import ClaimMapping


def reader_config(mapping: ClaimMapping) -> ReaderConfig:
    """The metadata ``mapping`` refers to: insurance number type, ICD source, order types, ..."""
    return ReaderConfig(
        insurance_identifier_type=mapping.insurance_number.patient_identifier_type,
        insurance_attribute_type=mapping.insurance_number.person_attribute_type,
        icd_source_uuid=mapping.icd10.source.uuid,
        icd_source_names=mapping.icd10.source.names,
        lab_order_types=mapping.order_types.lab,
        radiology_order_types=mapping.order_types.radiology,
        procedure_order_types=mapping.order_types.procedure,
        procedure_obs_concepts=mapping.procedure_obs_concepts,
        consultations=mapping.consultations,
        term_sources=tuple(sorted(mapping.term_sources())),
        document_concepts=tuple(r.concept for r in mapping.attachments.documents) if mapping.attachments else (),
        document_concept=mapping.attachments.document_concept if mapping.attachments else "Document",
    )
