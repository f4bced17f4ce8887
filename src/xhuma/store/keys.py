"""The one place cache keys are named.

Keys never contain an NHS number in clear: patient data lives under ``patient:{keyed hash}:...`` so that
``xhuma cache purge --patient N`` finds all of it from the NHS number alone. A document is also reachable by
its uniqueId (ITI-39 knows nothing else); the patient's ``documents`` index lists those uniqueIds so purge can
remove them too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable


class CacheKeys:
    def __init__(self, patient_hash: Callable[[str], str]) -> None:
        self._hash = patient_hash

    def patient_prefix(self, nhs_number: str) -> str:
        return f"patient:{self._hash(nhs_number)}:"

    def pds_patient(self, nhs_number: str) -> str:
        return self.patient_prefix(nhs_number) + "pds"

    def bundle(self, nhs_number: str) -> str:
        return self.patient_prefix(nhs_number) + "bundle"

    def patient_documents(self, nhs_number: str) -> str:
        """Index of the uniqueIds of the patient's cached documents (and the current document's metadata)."""
        return self.patient_prefix(nhs_number) + "documents"

    def pipeline_lease(self, nhs_number: str) -> str:
        """Lease of the patient's ITI-38 pipeline: one PDS → SDS → GP Connect run across replicas."""
        return self.patient_prefix(nhs_number) + "lease"

    @staticmethod
    def held_in_process(key: str) -> bool:
        """What ITI-38 advertises and ITI-39 retrieves (a document, its entryUUID, a patient's index): the keys
        the in-process tier also holds, so that they stay retrievable while Redis fails (xhuma.store.tiers)."""
        return key.startswith(("document:", "entry:", "report:")) or (
            key.startswith("patient:") and key.endswith(":documents"))

    @staticmethod
    def answered_when_absent(key: str) -> bool:
        """A document or its entryUUID: its absence is told to the caller ("unknown document"), so it is said only
        when the cache can vouch for it (xhuma.store.tiers). A document's conversion report goes with it."""
        return key.startswith(("document:", "entry:", "report:"))

    @staticmethod
    def document(unique_id: str) -> str:
        return f"document:{unique_id}"

    @staticmethod
    def document_report(unique_id: str) -> str:
        """The conversion report of the document (``xhuma convert --report`` JSON), kept as long as the document."""
        return f"report:{unique_id}"

    @staticmethod
    def document_entry(entry_uuid: str) -> str:
        """The uniqueId of the document with this XDS entryUUID (ITI-38 GetDocuments by entryUUID)."""
        return f"entry:{entry_uuid}"

    @staticmethod
    def saml_assertion(issuer: str, assertion_id: str) -> str:
        """Marks a used SAML assertion until it expires (replay guard); hashed, since both parts are the caller's."""
        digest = hashlib.sha256(b"\x00".join((issuer.encode(), assertion_id.encode()))).hexdigest()
        return f"saml:{digest}"

    @staticmethod
    def sds_route(ods_code: str, interaction: str = "gpc-structured") -> str:
        return f"sds:{ods_code.upper()}:{interaction}"

    @staticmethod
    def oauth_token(service: str) -> str:
        return f"token:{service}"
