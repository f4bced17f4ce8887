"""``xhuma cache``: operator commands for the cache (purge a patient or everything, make a new key).

The NHS number is never printed back, and never logged. Pass ``--patient -`` to read it from standard input
so that it does not end up in the shell history or the process list.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from xhuma.audit import Auditor, audit_key
from xhuma.cli import EXIT_CONFIGURATION, app, fail, settings_or_exit
from xhuma.config import ConfigurationError, Settings
from xhuma.errors import AuditUnavailable, CacheError
from xhuma.nhs.nhs_number import is_valid_nhs_number, normalise
from xhuma.store.audit import SqlAuditStore
from xhuma.store.cache import RedisCache
from xhuma.store.crypto import CacheKeyError, CacheKeyring, EncryptedCache, new_key_text
from xhuma.store.keys import CacheKeys
from xhuma.store.purge import PurgeResult, purge_all, purge_patient

cache_app = typer.Typer(help="Operate on the cache: purge a patient's data, create encryption keys.",
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache")


def _open_cache(settings: Settings, keyring: CacheKeyring) -> EncryptedCache:
    if not settings.redis_url:
        raise fail(
            "XHUMA_REDIS_URL is unset: the cache is in-process, inside the running server, and empties when it"
            " restarts", EXIT_CONFIGURATION)
    # Not wrapped in ResilientCache: a purge that cannot reach Redis must fail loudly, not report zero.
    inner = RedisCache(
        settings.redis_url, namespace=settings.redis_namespace, timeout_seconds=max(settings.redis_timeout_seconds, 5)
    )
    return EncryptedCache(inner, keyring, context=settings.redis_namespace)


def _read_nhs_number(raw: str) -> str:
    if raw == "-":
        raw = sys.stdin.readline()
    number = normalise(raw)
    if not is_valid_nhs_number(number):
        raise fail("--patient: not a valid NHS number (10 digits, Modulus 11)", 2)
    return number


@cache_app.command("purge")
def purge(
    patient: Annotated[
        str | None, typer.Option("--patient", help="NHS number whose cached data to remove ('-': read from stdin)")
    ] = None,
    purge_everything: Annotated[
        bool, typer.Option("--all", help="remove every entry of this deployment's cache namespace")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation (with --all)")] = False,
) -> None:
    """Remove a patient's cached data at once (e.g. after an objection or an incident), or everything."""
    if (patient is None) == (not purge_everything):
        raise fail("give exactly one of --patient NHS_NUMBER or --all", 2)
    settings = settings_or_exit()
    nhs_number = _read_nhs_number(patient) if patient is not None else None
    if nhs_number is not None and settings.cache_keys is None:
        # The server's ephemeral key is unknown here: neither its patient hash nor its values can be computed.
        raise fail("XHUMA_CACHE_KEYS is unset (ephemeral key in the server): purge by patient is impossible; use --all",
                   EXIT_CONFIGURATION)
    try:
        keyring = CacheKeyring.from_settings(settings)
    except ConfigurationError as error:
        raise fail(f"configuration error: {error}", EXIT_CONFIGURATION) from None
    cache = _open_cache(settings, keyring)
    if purge_everything and not yes:
        typer.confirm(f"Delete every cached entry under namespace '{settings.redis_namespace}'?", abort=True)

    async def run() -> PurgeResult | int:
        try:
            if nhs_number is not None:
                return await purge_patient(cache, CacheKeys(keyring.patient_hash), nhs_number)
            return await purge_all(cache)
        finally:
            await cache.close()

    try:
        result = asyncio.run(run())
    except CacheError as error:
        raise fail(f"purge failed, run it again: {error}") from None
    if isinstance(result, int):
        typer.echo(f"purged {result} cache entries")
        details: dict[str, int] = {"entries": result}
    else:
        typer.echo(f"purged {result.patient_entries} patient entries, {result.documents} documents and"
                   f" {result.document_pointers} document pointers for this patient")
        details = {"patient_entries": result.patient_entries, "documents": result.documents,
                   "document_pointers": result.document_pointers}
        if result.unreadable_documents:
            typer.echo(
                f"note: {result.unreadable_documents} cached documents could not be decrypted with the current keys"
                " and were not checked; they expire with their TTL, or run `xhuma cache purge --all`", err=True)
    # The purge itself is audited. It stands even when the audit fails: removing data must never be blocked.
    try:
        asyncio.run(_audit_purge(settings, nhs_number, details))
    except AuditUnavailable:
        raise fail("the cache was purged, but the audit event could not be written: record it by hand") from None


async def _audit_purge(settings: Settings, nhs_number: str | None, details: dict[str, int]) -> None:
    store = SqlAuditStore(settings.effective_database_url)
    try:
        if store.is_sqlite:
            await store.migrate()
        auditor = Auditor(store, hmac_key=audit_key(settings))
        await auditor.record("CACHE-PURGE", "success", nhs_number=nhs_number,
                             details={"scope": "patient" if nhs_number else "all", **details})
    finally:
        await store.close()


@cache_app.command("new-key")
def new_key(
    kid: Annotated[str, typer.Option("--kid", help="key id (1-32 of A-Z a-z 0-9 . _ -)")] = "k1",
) -> None:
    """Print a fresh 'kid:base64key' entry for XHUMA_CACHE_KEYS (or, without the 'kid:', XHUMA_CACHE_HASH_KEY)."""
    try:
        typer.echo(new_key_text(kid))
    except CacheKeyError as error:
        raise fail(f"--kid: {error}", 2) from None
