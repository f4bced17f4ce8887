"""The two reads of a stored document (xhuma.records): the whole document (GetDocuments, the console) and what
ITI-39 discloses, which is a view of the cached value rather than a copy of the document."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime

import pytest

from xhuma.errors import CacheError
from xhuma.ports import PdsPatient, StoredDocument
from xhuma.records import dump_document, load_content, load_document

CONTENT = b"<ClinicalDocument>" + os.urandom(4096).hex().encode() + b"</ClinicalDocument>"
DOCUMENT = StoredDocument(
    unique_id="2.16.840.1.113883.3.9999.1.1.42", entry_uuid="urn:uuid:1b4e28ba-2fa1-51d2-883f-0016d3cca427",
    nhs_number="9690937286", content=CONTENT, mime_type="text/xml",
    hash_sha1=hashlib.sha1(CONTENT, usedforsecurity=False).hexdigest(), size=len(CONTENT),
    creation_time=datetime(2026, 3, 1, 9, 30, tzinfo=UTC), service_start=datetime(2019, 1, 1, tzinfo=UTC),
    service_stop=None, title="Summary of GP record", source_ods="A20047",
    patient=PdsPatient(nhs_number="9690937286", family="Test", given=("Una",), gender="female",
                       birth_date="1970-01-01", gp_ods_code="A20047"),
    metadata={"confidentiality_code": "N", "language_code": "en-GB", "practice_name": "Test practice"},
)


def test_the_retrieve_read_is_a_read_only_view_of_the_cached_value_holding_exactly_the_stored_bytes() -> None:
    raw = dump_document(DOCUMENT)
    read = load_content(raw)
    assert (read.unique_id, read.nhs_number, read.mime_type) == (DOCUMENT.unique_id, "9690937286", "text/xml")
    assert read.content.obj is raw  # not a copy of the document
    assert read.content.readonly
    assert bytes(read.content) == CONTENT
    assert hashlib.sha1(read.content, usedforsecurity=False).hexdigest() == DOCUMENT.hash_sha1


def test_the_whole_read_gives_back_the_stored_document_with_its_bytes_as_bytes() -> None:
    loaded = load_document(dump_document(DOCUMENT))
    assert loaded == DOCUMENT
    assert type(loaded.content) is bytes


@pytest.mark.parametrize("raw", [b"", b"XDOC0" + bytes(4) + b"{}", b"<ClinicalDocument/>"])
def test_a_value_that_is_not_a_stored_document_is_our_trouble_not_not_found_by_either_read(raw: bytes) -> None:
    # Our own trouble is never reported as "not found": a cache error, which ITI-39 answers XDSRepositoryBusy.
    with pytest.raises(CacheError):
        load_content(raw)
    with pytest.raises(CacheError):
        load_document(raw)
