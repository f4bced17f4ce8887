"""Start-up refusal: the strict profiles (int, dep, live) need every access-security control configured.

``security_problems(settings)`` lists one line per missing or broken item; ``check_startup`` raises
``InsecureConfiguration`` (a ``ConfigurationError``) carrying them. The CLI prints each line and exits 3.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from xhuma.config import ENV_PREFIX, ConfigurationError, SamlVerify, Settings

MIN_SECRET_CHARS = 32


class InsecureConfiguration(ConfigurationError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _key(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _file_problem(name: str, path: Path | None) -> str | None:
    if path is not None and not path.is_file():
        return f"{_key(name)}: file not found: {path}"
    return None


def security_problems(settings: Settings) -> list[str]:
    # Checks that apply in every profile: what is configured must be usable.
    problems = _usability_problems(settings)
    if not settings.profile.strict:
        return problems
    profile = f"in profile {settings.profile.value}"
    for check in (_caller_problems, _saml_problems, _audit_key_problems, _admin_problems):
        problems += check(settings, profile)
    return problems


def _usability_problems(settings: Settings) -> list[str]:
    problems: list[str] = []
    for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file", "atna_ca_file"):
        problem = _file_problem(name, getattr(settings, name))
        if problem:
            problems.append(problem)
    for path in settings.saml_trusted_certs:
        if not path.is_file():
            problems.append(f"{_key('saml_trusted_certs')}: file not found: {path}")
    if settings.atna_syslog_url:
        parts = urlsplit(settings.atna_syslog_url)
        if parts.scheme != "tls" or not parts.hostname or not parts.port:
            problems.append(f"{_key('atna_syslog_url')}: must be tls://host:port")
    if settings.client_cert_allow_list:
        from xhuma.security.client_auth import AllowList

        try:
            AllowList(settings.client_cert_allow_list)
        except ValueError as error:
            problems.append(f"{_key('client_cert_allow_list')}: {str(error).splitlines()[0]}")
    if settings.admin_oidc_jwks_url and not (settings.admin_oidc_issuer and settings.admin_oidc_audience):
        problems.append(f"{_key('admin_oidc_issuer')}/{_key('admin_oidc_audience')}: "
                        "both required with XHUMA_ADMIN_OIDC_JWKS_URL")
    return problems


def _caller_problems(settings: Settings, profile: str) -> list[str]:
    """1. Only known systems may call the SOAP endpoints."""
    problems: list[str] = []
    if not settings.client_cert_allow_list:
        problems.append(f"{_key('client_cert_allow_list')}: required {profile} "
                        "(subject DNs or sha256: fingerprints of the calling gateways)")
    if settings.tls_client_ca_file is None and not settings.trusted_proxies:
        problems.append(f"{_key('tls_client_ca_file')}: required {profile} to verify client certificates "
                        f"(or set {_key('trusted_proxies')} when a proxy terminates TLS)")
    elif settings.tls_client_ca_file is not None and settings.tls_cert_file is None and not settings.trusted_proxies:
        problems.append(f"{_key('tls_cert_file')}: required {profile} to receive client certificates over TLS "
                        f"(or set {_key('trusted_proxies')} when a proxy terminates TLS)")
    return problems


def _saml_problems(settings: Settings, profile: str) -> list[str]:
    """2. SAML/XUA assertions must be verified (LESSONS 13)."""
    problems: list[str] = []
    if settings.saml_verify is not SamlVerify.REQUIRED:
        problems.append(f"{_key('saml_verify')}: must be 'required' {profile}")
    if not settings.saml_trusted_certs:
        problems.append(f"{_key('saml_trusted_certs')}: required {profile} (PEM certificates of the SAML signers)")
    return problems


def _audit_key_problems(settings: Settings, profile: str) -> list[str]:
    """3. Patients are pseudonymised in the audit trail under a dedicated key."""
    key = settings.audit_hmac_key.get_secret_value() if settings.audit_hmac_key else ""
    if not key:
        return [f"{_key('audit_hmac_key')}: required {profile} (at least {MIN_SECRET_CHARS} characters)"]
    if len(key) < MIN_SECRET_CHARS:
        return [f"{_key('audit_hmac_key')}: too short {profile} (at least {MIN_SECRET_CHARS} characters)"]
    return []


def _admin_problems(settings: Settings, profile: str) -> list[str]:
    """4. The admin API and console need authentication."""
    tokens = [token.get_secret_value() for token in settings.admin_tokens]
    if not tokens and not settings.admin_oidc_jwks_url:
        return [f"{_key('admin_tokens')}: required {profile} (or {_key('admin_oidc_jwks_url')})"]
    if any(len(token) < MIN_SECRET_CHARS for token in tokens):
        return [f"{_key('admin_tokens')}: every token must have at least {MIN_SECRET_CHARS} characters {profile}"]
    return []


def check_startup(settings: Settings) -> None:
    problems = security_problems(settings)
    if problems:
        raise InsecureConfiguration(problems)
