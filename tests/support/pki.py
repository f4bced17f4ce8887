"""Keys and certificates generated inside the tests (nothing is read from disk, nothing is shared between runs):

- ``Pki``: a CA plus server and client leaves (valid, expired, foreign), for mutual TLS and ATNA;
- ``new_signing_key``: an RSA key and self-signed certificate that signs SAML assertions;
- ``self_signed``: one self-signed certificate for localhost, for the TLS-in-transit peers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
Extension = tuple[x509.ExtensionType, bool]  # (extension, critical)

LOCALHOST = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ip_address("127.0.0.1"))])


def certificate(subject: x509.Name, key: PrivateKey, *, not_before: datetime, not_after: datetime,
                issuer: x509.Name | None = None, signer: PrivateKey | None = None,
                extensions: Sequence[Extension] = ()) -> x509.Certificate:
    """An X.509 certificate for ``key``; self-signed unless ``issuer`` and ``signer`` are given."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer or subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer or key, hashes.SHA256())


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_pem(cert_file: Path, key_file: Path, cert: x509.Certificate, key: PrivateKey) -> None:
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(private_key_pem(key))


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, key_cert_sign=ca, crl_sign=ca, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         encipher_only=False, decipher_only=False)


# --- a CA and its leaves ----------------------------------------------------------------------------------------
@dataclass
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_file: Path
    key_file: Path

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()


def _name(common_name: str, organisation: str = "Test Trust") -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "GB"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    cert_file, key_file = directory / f"{stem}.pem", directory / f"{stem}.key"
    write_pem(cert_file, key_file, cert, key)
    return Issued(cert, key, cert_file, key_file)


class Pki:
    """One CA plus whatever leaves a test asks for, written as PEM files under ``directory``."""

    def __init__(self, directory: Path, name: str = "Test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        ca = certificate(_name(name), key, not_before=now - timedelta(days=1), not_after=now + timedelta(days=30),
                         extensions=[(x509.BasicConstraints(ca=True, path_length=None), True),
                                     (_key_usage(ca=True), True),
                                     (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)])
        self.ca = _write(directory, name.replace(" ", "_").lower(), ca, key)

    def issue(self, common_name: str, *, server: bool = False, expired: bool = False,
              organisation: str = "Test Trust") -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        if expired:
            not_before, not_after = now - timedelta(days=10), now - timedelta(days=1)
        else:
            not_before, not_after = now - timedelta(hours=1), now + timedelta(days=7)
        alternative = LOCALHOST if server else x509.SubjectAlternativeName(
            [x509.DNSName(f"{common_name.lower().replace(' ', '-')}.example.nhs.uk")])
        leaf = certificate(
            _name(common_name, organisation), key, not_before=not_before, not_after=not_after,
            issuer=self.ca.certificate.subject, signer=self.ca.key,
            extensions=[
                (x509.BasicConstraints(ca=False, path_length=None), True),
                (_key_usage(ca=False), True),
                (x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), False),
                (x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca.key.public_key()), False),
                (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
                (alternative, False),
            ],
        )
        stem = common_name.replace(" ", "_").lower() + ("_expired" if expired else "")
        return _write(self.directory, stem, leaf, key)


# --- SAML signing -----------------------------------------------------------------------------------------------
@dataclass
class SigningKey:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return private_key_pem(self.key)


def new_signing_key(name: str = "Epic Care Everywhere Test") -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    cert = certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key,
                       not_before=now - timedelta(days=1), not_after=now + timedelta(days=30))
    return SigningKey(key, cert)


def trusted_signing_key(directory: Path, filename: str = "saml-signer.pem") -> tuple[SigningKey, Path]:
    """A new SAML signing key and its certificate written to ``directory / filename`` (what the gateway trusts)."""
    signer = new_signing_key()
    cert_file = directory / filename
    cert_file.write_bytes(signer.cert_pem)
    return signer, cert_file


# --- one self-signed TLS certificate ------------------------------------------------------------------------------
@dataclass
class SelfSigned:
    cert_file: Path
    key_file: Path


def self_signed(directory: Path, common_name: str = "localhost") -> SelfSigned:
    """An EC certificate for localhost/127.0.0.1 that is its own CA (peers trust it by its own file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), key,
                       not_before=now - timedelta(minutes=5), not_after=now + timedelta(days=1),
                       extensions=[(LOCALHOST, False), (x509.BasicConstraints(ca=True, path_length=None), True)])
    result = SelfSigned(directory / f"{common_name}.crt", directory / f"{common_name}.key")
    write_pem(result.cert_file, result.key_file, cert, key)
    return result
