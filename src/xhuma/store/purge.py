"""Remove a patient's cached data at once (``xhuma cache purge --patient N``), e.g. after an objection or an
incident.

A patient's data is everything under ``CacheKeys.patient_prefix`` (PDS result, GP Connect bundle, documents
index, anything added later under that prefix) plus the documents named ``document:{uniqueId}`` and the
``entry:{entryUUID}`` pointers to them and their ``report:{uniqueId}`` conversion reports. The documents are
found two ways, so that a stale or unreadable index cannot leave one behind (the index lists the current document
only):

1. the uniqueIds listed in the patient's ``documents`` index;
2. a sweep of every ``document:*`` entry whose decrypted value mentions the NHS number (the CCD and its
   metadata carry it). Deleting a false positive is harmless: it is a cache, refetched on demand.

Documents and pointers are deleted before the patient's keys, so an interrupted purge can simply be run again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from xhuma.nhs.nhs_number import normalise as normalise_nhs_number
from xhuma.ports import Cache
from xhuma.store.keys import CacheKeys

_UNIQUE_ID = re.compile(r"^(urn:oid:)?[0-2](\.(0|[1-9][0-9]*))+$|^urn:uuid:[0-9a-fA-F-]{36}$")
_DOCUMENT_PREFIX = CacheKeys.document("")
_ENTRY_PREFIX = CacheKeys.document_entry("")
_DELETE_BATCH = 500


@dataclass(frozen=True, slots=True)
class PurgeResult:
    patient_entries: int  # entries under the patient prefix that were deleted
    documents: int  # document:{uniqueId} entries that were deleted
    document_pointers: int  # entry:{entryUUID} -> uniqueId entries of those documents that were deleted
    unreadable_documents: int  # document entries that could not be decrypted (so not checked)

    @property
    def total(self) -> int:
        return self.patient_entries + self.documents + self.document_pointers


def document_ids_from_index(value: bytes | None) -> set[str]:
    """The uniqueIds in a patient's documents index, whatever its JSON shape (list, object, nested)."""
    if not value:
        return set()
    try:
        data: Any = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return set()
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, str):
            if node.startswith(_DOCUMENT_PREFIX):
                node = node[len(_DOCUMENT_PREFIX) :]
            if _UNIQUE_ID.match(node):
                found.add(node)
        elif isinstance(node, dict):
            for key, item in node.items():
                walk(key)
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(data)
    return found


def _mentions(value: bytes, nhs_number: str) -> bool:
    spaced = f"{nhs_number[:3]} {nhs_number[3:6]} {nhs_number[6:]}"
    return nhs_number.encode() in value or spaced.encode() in value


async def _delete(cache: Cache, keys: Iterable[str]) -> int:
    batch: list[str] = []
    deleted = 0
    for key in keys:
        batch.append(key)
        if len(batch) >= _DELETE_BATCH:
            deleted += await cache.delete(*batch)
            batch = []
    if batch:
        deleted += await cache.delete(*batch)
    return deleted


async def purge_patient(cache: Cache, keys: CacheKeys, nhs_number: str, *, sweep_documents: bool = True) -> PurgeResult:
    """Delete every cached entry of one patient. ``cache`` must decrypt (an EncryptedCache), and must not
    swallow failures: a purge that could not complete raises ``CacheError``."""
    nhs_number = normalise_nhs_number(nhs_number)
    prefix = keys.patient_prefix(nhs_number)
    document_keys = {CacheKeys.document(unique_id) for unique_id in
                     document_ids_from_index(await cache.get(keys.patient_documents(nhs_number)))}
    unreadable = 0
    if sweep_documents:
        for key in await cache.keys(_DOCUMENT_PREFIX):
            if key in document_keys:
                continue
            value = await cache.get(key)
            if value is None:
                unreadable += 1  # expired meanwhile, or not decryptable with the current keys
            elif _mentions(value, nhs_number):
                document_keys.add(key)
    unique_ids = {key[len(_DOCUMENT_PREFIX) :] for key in document_keys}
    pointer_keys = []
    if unique_ids:
        for key in await cache.keys(_ENTRY_PREFIX):
            target = await cache.get(key)
            if target is not None and target.decode(errors="replace") in unique_ids:
                pointer_keys.append(key)
    document_pointers = await _delete(cache, pointer_keys)
    await _delete(cache, sorted(CacheKeys.document_report(unique_id) for unique_id in unique_ids))
    documents = await _delete(cache, sorted(document_keys))
    patient_entries = await _delete(cache, await cache.keys(prefix))
    return PurgeResult(patient_entries=patient_entries, documents=documents, document_pointers=document_pointers,
                       unreadable_documents=unreadable)


async def purge_all(cache: Cache) -> int:
    """Delete every entry of this deployment's cache (its namespace only), e.g. after a key compromise."""
    return await _delete(cache, await cache.keys(""))


__all__ = ["PurgeResult", "document_ids_from_index", "purge_all", "purge_patient"]
