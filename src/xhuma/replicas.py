"""Start-up refusal of a configuration that cannot work across processes (docs/operations.md, Replicas).

A document found through one process must be retrievable through any other, and one patient must keep one audit
pseudonym. That takes state every process shares: the cache in Redis, the keys that seal and name its entries,
and the pseudonym key. Without them each process has its own, and the failure shows only later, as an EHR told
that a document it was just offered does not exist. So it is refused before serving:

* ``--workers N`` (N > 1) needs ``XHUMA_REDIS_URL``, ``XHUMA_CACHE_KEYS`` and ``XHUMA_AUDIT_HMAC_KEY``.
* A shared cache (``XHUMA_REDIS_URL``) needs ``XHUMA_CACHE_KEYS`` and ``XHUMA_AUDIT_HMAC_KEY`` even with one worker:
  pointing replicas at one Redis is what a shared cache is for, and replicas with ephemeral keys cannot read each
  other's entries (docs/decisions.md).

The embedded default (one worker, no Redis) needs none of them.
"""

from __future__ import annotations

from xhuma.config import ENV_PREFIX, Settings


def _missing_keys(settings: Settings) -> list[str]:
    missing = []
    if settings.cache_keys is None:
        missing.append(f"{ENV_PREFIX}CACHE_KEYS (shared cache keys)")
    if settings.audit_hmac_key is None or not settings.audit_hmac_key.get_secret_value():
        missing.append(f"{ENV_PREFIX}AUDIT_HMAC_KEY (shared pseudonym key)")
    return missing


def replica_problem(settings: Settings, workers: int = 1) -> str | None:
    """One line naming what is missing for ``workers`` processes (and any replica on a shared cache), or None."""
    if workers > 1:
        missing = [] if settings.redis_url else [f"{ENV_PREFIX}REDIS_URL (shared cache)"]
        missing += _missing_keys(settings)
        if missing:
            return f"--workers {workers} needs state shared between processes; missing: {', '.join(missing)}"
        return None
    if settings.redis_url:
        missing = _missing_keys(settings)
        if missing:
            return f"{ENV_PREFIX}REDIS_URL is a cache shared between replicas; missing: {', '.join(missing)}"
    return None


__all__ = ["replica_problem"]
