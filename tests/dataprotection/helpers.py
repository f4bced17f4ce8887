"""Shared helpers of the data-protection tests: keys, raw Redis access, a self-signed certificate."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

import redis.asyncio as redis_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Valid Modulus 11 NHS numbers from the NHS test ranges.
NHS_NUMBER = "9434765919"
OTHER_NHS_NUMBER = "9434765870"


def key_entry(kid: str, key: bytes | None = None) -> str:
    return f"{kid}:{base64.b64encode(key or os.urandom(32)).decode()}"


@asynccontextmanager
async def raw_redis(url: str) -> AsyncIterator[redis_asyncio.Redis]:
    client = redis_asyncio.Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


async def raw_items(url: str, namespace: str) -> dict[bytes, bytes]:
    """Every key and value under ``namespace:`` exactly as Redis holds them."""
    async with raw_redis(url) as client:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
        values = await client.mget(keys) if keys else []
    return {key: value for key, value in zip(keys, values, strict=True) if value is not None}


@dataclass
class SelfSigned:
    cert_file: Path
    key_file: Path


def self_signed(directory: Path, common_name: str = "localhost") -> SelfSigned:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / f"{common_name}.crt"
    key_file = directory / f"{common_name}.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return SelfSigned(cert_file, key_file)
