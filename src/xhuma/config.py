"""One Settings object for the whole service.

Every value that differs between environments is a setting, read from the environment (prefix ``XHUMA_``),
from an optional TOML file (``xhuma --config FILE`` or ``XHUMA_CONFIG_FILE``), or from the profile defaults.
Precedence: explicit arguments > environment > TOML file > profile defaults > field defaults.

Profiles (``XHUMA_PROFILE``):
  simulator  the built-in NHS simulator, in-process cache, SQLite audit; relaxed security (default)
  int        NHS Integration environment (INT); strict security
  dep        NHS Deployment environment (DEP); strict security
  live       production; strict security
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "XHUMA_"
CONFIG_FILE_ENV = "XHUMA_CONFIG_FILE"

OID_PATTERN = r"^[0-2](\.(0|[1-9][0-9]*))+$"


class Profile(StrEnum):
    SIMULATOR = "simulator"
    INT = "int"
    DEP = "dep"
    LIVE = "live"

    @property
    def strict(self) -> bool:
        return self is not Profile.SIMULATOR


class SamlVerify(StrEnum):
    REQUIRED = "required"
    OPTIONAL = "optional"


class EntryType(StrEnum):
    STABLE = "stable"
    ON_DEMAND = "on-demand"


# Defaults that depend on the profile. Only fields the operator did not set explicitly are filled from here.
# URLs are the public NHS England API platform hosts for each environment (SPEC §5.1, §6.1, §7.1).
PROFILE_DEFAULTS: dict[Profile, dict[str, Any]] = {
    Profile.SIMULATOR: {
        "saml_verify": SamlVerify.OPTIONAL,
        "log_format": "console",
    },
    Profile.INT: {
        "saml_verify": SamlVerify.REQUIRED,
        "log_format": "json",
        "pds_base_url": "https://int.api.service.nhs.uk/personal-demographics/FHIR/R4",
        "pds_token_url": "https://int.api.service.nhs.uk/oauth2/token",
        "sds_base_url": "https://int.api.service.nhs.uk/spine-directory/FHIR/R4",
        "gpc_ssp_url": "https://proxy.int.spine2.ncrs.nhs.uk",
    },
    Profile.DEP: {
        "saml_verify": SamlVerify.REQUIRED,
        "log_format": "json",
        "pds_base_url": "https://dep.api.service.nhs.uk/personal-demographics/FHIR/R4",
        "pds_token_url": "https://dep.api.service.nhs.uk/oauth2/token",
        "sds_base_url": "https://dep.api.service.nhs.uk/spine-directory/FHIR/R4",
        "gpc_ssp_url": "https://proxy.dep.spine2.ncrs.nhs.uk",
    },
    Profile.LIVE: {
        "saml_verify": SamlVerify.REQUIRED,
        "log_format": "json",
        "pds_base_url": "https://api.service.nhs.uk/personal-demographics/FHIR/R4",
        "pds_token_url": "https://api.service.nhs.uk/oauth2/token",
        "sds_base_url": "https://api.service.nhs.uk/spine-directory/FHIR/R4",
        "gpc_ssp_url": "https://proxy.spine2.ncrs.nhs.uk",
    },
}


class Settings(BaseSettings):
    """Effective configuration. Field names map to ``XHUMA_<NAME>`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
        env_parse_none_str="",
    )

    # --- general -------------------------------------------------------------------------------------
    profile: Profile = Field(default=Profile.SIMULATOR, description="simulator | int | dep | live")
    log_level: str = Field(default="INFO", description="Python log level")
    log_format: str = Field(default="console", pattern="^(console|json)$", description="console | json")
    working_dir: Path = Field(default=Path("."), description="where the default SQLite audit file lives")
    health_check_timeout_seconds: float = Field(
        default=0.8, gt=0, le=1.5, description="time limit of each /health/ready check (they run together)"
    )

    # --- identity of this gateway (IHE) --------------------------------------------------------------
    home_community_id: str = Field(
        default="2.16.840.1.113883.3.9999.1",
        pattern=OID_PATTERN,
        description="our IHE homeCommunityId (an OID, sent as urn:oid:...)",
    )
    repository_unique_id: str = Field(
        default="2.16.840.1.113883.3.9999.1.1", pattern=OID_PATTERN, description="XDS repositoryUniqueId"
    )
    document_oid_root: str = Field(
        default="2.16.840.1.113883.3.9999.1.2",
        pattern=OID_PATTERN,
        description="OID root under which document uniqueIds are minted",
    )
    device_oid: str = Field(
        default="2.16.840.1.113883.3.9999.1.3", pattern=OID_PATTERN, description="HL7v3 sender device id root"
    )
    organisation_name: str = Field(default="Xhuma Gateway", description="custodian/author name in answers")
    entry_type: EntryType = Field(default=EntryType.STABLE, description="XDS entry type: stable | on-demand")
    mtom_responses: bool = Field(default=True, description="ITI-39 document as MTOM/XOP attachment (else inline)")
    urn_oid_prefix: bool = Field(default=True, description="prefix homeCommunityId with urn:oid:")
    reply_to_allow_list: list[str] = Field(
        default_factory=list, description="ReplyTo addresses we may call back (empty: never)"
    )
    max_request_bytes: int = Field(
        default=10 * 1024 * 1024, gt=0, description="largest SOAP request accepted, in bytes"
    )
    gzip_level: int = Field(
        default=1, ge=0, le=9, description="gzip level of SOAP and console answers (1 fastest, 9 smallest, 0 off)"
    )
    gzip_min_bytes: int = Field(
        default=1400, ge=0, description="smallest answer compressed, in bytes (about one TCP segment)"
    )
    prefetch_on_match: bool = Field(default=False, description="ITI-55 match starts fetching the record")
    demographics_match: str = Field(
        default="strict",
        pattern="^(strict|lenient|off)$",
        description="ITI-55 query demographics vs PDS: strict | lenient | off",
    )
    pds_demographic_search: bool = Field(
        default=True, description="ITI-55 without an NHS number searches PDS by demographics (docs/ihe.md)"
    )
    pds_search_min_score: float = Field(
        default=0.9, ge=0.0, le=1.0, description="lowest PDS search score accepted as a match (1.0: exact)"
    )
    pds_search_mode: str = Field(
        default="non-fuzzy", pattern="^(non-fuzzy|fuzzy|exact)$",
        description="PDS search: non-fuzzy (with history) | fuzzy | exact",
    )
    wsse_timestamp_seconds: int = Field(
        default=0, ge=0, le=3600,
        description="answers carry wsse:Security/wsu:Timestamp valid this long, in seconds (0: none)",
    )
    xcpd_match_code_system: str = Field(
        default="2.16.840.1.113883.1.11.19914",
        description="codeSystem of ITI-55 queryMatchObservation/code IHE_PDQ (empty: none)",
    )
    realm: str = Field(default="US", pattern="^(US|UV)$", description="C-CDA realmCode")
    ccda_product_coding: str = Field(
        default="primary",
        pattern="^(primary|translation)$",
        description="C-CDA drug/vaccine codes: SNOMED/dm+d as primary code, or nullFlavor OTH + translation",
    )
    # XDS DocumentEntry codes (ITI-38), each "code^display^codingScheme"; agree them with the initiating gateway.
    xds_class_code: str = Field(
        default="34133-9^Summary of episode note^2.16.840.1.113883.6.1", description="DocumentEntry classCode"
    )
    xds_type_code: str = Field(
        default="34133-9^Summary of episode note^2.16.840.1.113883.6.1", description="DocumentEntry typeCode"
    )
    xds_format_code: str = Field(
        default="urn:hl7-org:sdwg:ccda-structuredBody:2.1^C-CDA R2.1 structured body^1.3.6.1.4.1.19376.1.2.3",
        description="DocumentEntry formatCode",
    )
    xds_healthcare_facility_type_code: str = Field(
        default="394761003^General practice premises^2.16.840.1.113883.6.96",
        description="DocumentEntry healthcareFacilityTypeCode",
    )
    xds_practice_setting_code: str = Field(
        default="394814009^General practice^2.16.840.1.113883.6.96", description="DocumentEntry practiceSettingCode"
    )

    # --- SAML / XUA ----------------------------------------------------------------------------------
    saml_verify: SamlVerify = Field(default=SamlVerify.OPTIONAL, description="required | optional")
    saml_trusted_certs: list[Path] = Field(
        default_factory=list, description="PEM certificates that may sign SAML assertions"
    )
    saml_audience: list[str] = Field(default_factory=list, description="accepted SAML Audience values")
    saml_clock_skew_seconds: int = Field(default=120, ge=0, description="tolerance on NotBefore/NotOnOrAfter")
    saml_max_lifetime_seconds: int = Field(
        default=3600, gt=0, description="longest accepted assertion lifetime (NotOnOrAfter - NotBefore/IssueInstant)"
    )
    saml_require_resource_id: bool = Field(
        default=True, description="the assertion's resource-id must name the patient of the request"
    )
    saml_replay_memory_items: int = Field(
        default=100_000, gt=0, description="assertion ids remembered in-process (replay guard without Redis)"
    )
    allowed_purposes_of_use: list[str] = Field(
        default_factory=lambda: ["TREATMENT"], description="accepted PurposeOfUse codes"
    )

    # --- cache ---------------------------------------------------------------------------------------
    redis_url: str | None = Field(default=None, description="redis:// or rediss:// URL; unset: in-process")
    redis_namespace: str = Field(default="xhuma", description="key prefix in Redis")
    redis_timeout_seconds: float = Field(
        default=1.0, gt=0,
        description="a Redis operation is given up once Redis answered nothing this long; a request waits about once",
    )
    redis_max_connections: int = Field(
        default=64, gt=0, description="Redis connections per replica; beyond, a request waits for a free one"
    )
    cache_bypass_after_failures: int = Field(
        default=3, ge=1, description="consecutive Redis failures after which Redis is bypassed for a while"
    )
    cache_bypass_seconds: float = Field(
        default=5.0, gt=0, description="how long Redis is bypassed (then probed) after repeated failures"
    )
    local_tier_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=0,
        description="bytes of sealed documents created or served here, kept in process for when Redis fails; 0: off",
    )
    memory_cache_max_items: int = Field(default=2048, gt=0, description="in-process cache size")
    cache_keys: SecretStr | None = Field(
        default=None, description="cache encryption keys: 'kid:base64key,kid2:base64key' (first encrypts)"
    )
    cache_hash_key: SecretStr | None = Field(
        default=None, description="secret of the keyed hash in patient cache keys; unset: the last cache key"
    )
    ttl_document_seconds: int = Field(default=3600, gt=60, description="cached CCD and its metadata")
    ttl_bundle_seconds: int = Field(default=900, gt=0, description="cached GP Connect bundle")
    ttl_pds_seconds: int = Field(default=600, gt=0, description="cached PDS patient")
    ttl_sds_seconds: int = Field(default=3600, gt=0, description="cached SDS route per practice")
    pipeline_lease_seconds: int = Field(
        default=15, ge=2, le=300, description="lease on one patient's ITI-38 pipeline across replicas (renewed)"
    )
    pipeline_wait_seconds: float = Field(
        default=60.0, gt=0, description="longest an ITI-38 waits for another replica's pipeline of its patient"
    )

    # --- audit ---------------------------------------------------------------------------------------
    database_url: str | None = Field(
        default=None, description="audit database (postgresql+asyncpg://...); unset: SQLite file"
    )
    audit_hmac_key: SecretStr | None = Field(default=None, description="key for patient pseudonyms in audit")
    audit_write_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60,
        description="time limit of an audit write; the event cannot commit later, and the caller is told nothing "
        "was disclosed",
    )
    atna_syslog_url: str | None = Field(default=None, description="tls://host:port of an ATNA collector")

    # --- access security -----------------------------------------------------------------------------
    admin_tokens: list[SecretStr] = Field(
        default_factory=list, description="bearer tokens for /api/* and the console"
    )
    tls_cert_file: Path | None = Field(default=None, description="serve HTTPS with this certificate")
    tls_key_file: Path | None = Field(default=None, description="key for tls_cert_file")
    tls_client_ca_file: Path | None = Field(default=None, description="CA bundle for client certificates")
    client_cert_allow_list: list[str] = Field(
        default_factory=list, description="allowed client subject DNs or sha256:fingerprints"
    )
    trusted_proxies: list[str] = Field(
        default_factory=list, description="proxy addresses allowed to forward client certificates"
    )
    tls_require_client_cert: bool = Field(
        default=True,
        description="direct mTLS with an allow-list: refuse a client without a certificate in the TLS handshake "
        "(false: decided per endpoint, for HTTPS health probes that cannot present one)",
    )
    keepalive_timeout_seconds: float = Field(
        default=5.0, gt=0, le=300, description="idle keep-alive connections are closed after this"
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300,
        description="a connection is closed when a request's line and headers take longer than this (slowloris)",
    )
    max_header_bytes: int = Field(
        default=64 * 1024, ge=1024, description="largest request line and headers, in bytes (larger: 431)"
    )
    max_connections: int = Field(
        default=1000, gt=0, description="open connections per process; beyond, requests are answered 503"
    )
    rate_limit_per_minute: int = Field(default=0, ge=0, description="requests per client per minute (0: off)")
    client_cert_header: str = Field(
        default="x-ssl-client-cert",
        description="header a trusted proxy forwards the client certificate in (URL-encoded PEM, or Envoy XFCC)",
    )
    admin_oidc_jwks_url: str | None = Field(
        default=None, description="JWKS URL: accept OIDC JWTs as admin bearer tokens (with issuer/audience)"
    )
    admin_oidc_issuer: str | None = Field(default=None, description="required iss of admin OIDC tokens")
    admin_oidc_audience: str | None = Field(default=None, description="required aud of admin OIDC tokens")
    admin_oidc_role: str | None = Field(
        default=None, description="role that admin OIDC tokens must carry in 'roles' (unset: any valid token)"
    )
    atna_ca_file: Path | None = Field(default=None, description="CA bundle that signs the ATNA collector")
    atna_queue_size: int = Field(default=10000, gt=0, description="ATNA messages buffered before dropping")

    # --- NHS: shared transport -----------------------------------------------------------------------
    http_connect_timeout_seconds: float = Field(default=5.0, gt=0, description="upstream connect timeout")
    http_read_timeout_seconds: float = Field(default=30.0, gt=0, description="upstream read timeout")
    http_retries: int = Field(default=2, ge=0, le=10, description="retries on transient upstream failures")
    breaker_failure_threshold: int = Field(default=5, gt=0, description="failures that open the breaker")
    breaker_reset_seconds: float = Field(default=30.0, gt=0, description="how long the breaker stays open")
    breaker_max_endpoints: int = Field(
        default=10000, gt=0, description="upstream endpoints (GP practices, base URLs) with a breaker held, per service"
    )
    breaker_idle_seconds: float = Field(
        default=300.0, gt=0, description="a closed breaker unused this long forgets its failures and may be dropped"
    )
    http_backoff_initial_seconds: float = Field(
        default=0.25, gt=0, description="first retry delay (exponential backoff with jitter)"
    )
    http_backoff_max_seconds: float = Field(default=4.0, gt=0, description="longest retry delay")
    http_keepalive_expiry_seconds: float = Field(
        default=4.0, gt=0, description="idle upstream connections closed after this (below servers' 5 s idle timeout)"
    )
    http_max_response_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="largest NHS answer accepted, in bytes once gzip-decoded"
    )
    spine_client_cert: Path | None = Field(default=None, description="Spine mTLS client certificate (PEM)")
    spine_client_key: Path | None = Field(default=None, description="Spine mTLS client key (PEM)")
    spine_ca_bundle: Path | None = Field(default=None, description="CA bundle for Spine endpoints")

    # --- NHS: PDS ------------------------------------------------------------------------------------
    pds_base_url: str | None = Field(default=None, description="PDS FHIR R4 base URL; unset in simulator")
    pds_token_url: str | None = Field(default=None, description="NHS API platform OAuth token URL")
    pds_api_key: SecretStr | None = Field(default=None, description="application API key (JWT iss/sub)")
    pds_private_key_file: Path | None = Field(default=None, description="RS512 key for the client assertion")
    pds_kid: str | None = Field(default=None, description="kid of the PDS client assertion key")
    end_user_org_ods: str = Field(default="X26", description="NHSD-End-User-Organisation-ODS header")
    pds_token_margin_seconds: int = Field(
        default=60, ge=0, description="renew the cached PDS access token this long before it expires"
    )

    # --- NHS: SDS ------------------------------------------------------------------------------------
    sds_base_url: str | None = Field(default=None, description="SDS FHIR base URL; unset in simulator")
    sds_api_key: SecretStr | None = Field(default=None, description="SDS apikey header")

    # --- NHS: GP Connect -----------------------------------------------------------------------------
    gpc_ssp_url: str | None = Field(default=None, description="Spine Secure Proxy URL; unset in simulator")
    gpc_from_asid: str = Field(default="200000000359", description="our ASID (Ssp-From)")
    gpc_consumer_ods: str = Field(default="X26", description="our organisation ODS code (JWT)")
    gpc_jwt_issuer: str = Field(default="https://xhuma.example.nhs.uk", description="JWT iss")
    gpc_device_name: str = Field(default="Xhuma", description="requesting_device name in the JWT")
    gpc_include_resolved_allergies: bool = Field(default=True, description="request resolved allergies")
    gpc_include_prescription_issues: bool = Field(default=True, description="request medication issues")
    gpc_medication_search_from_years: int = Field(default=2, ge=0, description="medication period, years")
    gpc_consultations_most_recent: int = Field(default=3, ge=1, le=99, description="last N consultations")
    gpc_uncategorised_data_years: int = Field(default=2, ge=0, description="uncategorised data period, years")
    gpc_investigations_years: int = Field(default=2, ge=0, description="investigations period, years")
    gpc_clinical_areas: list[str] = Field(
        default_factory=lambda: [
            "allergies", "medication", "problems", "immunisations", "uncategorised", "investigations",
            "referrals", "diary", "consultations",
        ],
        description="clinical areas requested from GP Connect (allergies, medication, problems, immunisations, "
        "uncategorised, investigations, referrals, diary, consultations)",
    )

    # --- NHS: Terminology Server (issue 13) ----------------------------------------------------------
    terminology_url: str | None = Field(
        default=None, description="NHS England Terminology Server FHIR R4 base URL; unset: the simulator's in the "
        "simulator profile, else no terminology (documented fallbacks)"
    )
    terminology_token_url: str | None = Field(default=None, description="Terminology Server OAuth 2.0 token URL")
    terminology_client_id: SecretStr | None = Field(default=None, description="system-to-system client id")
    terminology_client_secret: SecretStr | None = Field(default=None, description="system-to-system client secret")
    ttl_terminology_seconds: int = Field(
        default=30 * 86400, gt=0, description="cached facts per code (the release version is in the key)"
    )

    # --- simulator -----------------------------------------------------------------------------------
    simulator_data: Path | None = Field(
        default=None, description="directory of GP Connect bundles served by the simulator"
    )
    simulator_pds_latency_ms: int = Field(default=0, ge=0, description="simulated PDS latency")
    simulator_sds_latency_ms: int = Field(default=0, ge=0, description="simulated SDS latency")
    simulator_gpc_latency_ms: int = Field(default=0, ge=0, description="simulated GP Connect latency")
    simulator_default_ods: str = Field(
        default="B82617", description="simulated GP practice of bundles without managingOrganization"
    )

    # --- validators ----------------------------------------------------------------------------------
    @field_validator("database_url", "redis_url", "atna_syslog_url", "admin_oidc_jwks_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("cache_keys", "cache_hash_key")
    @classmethod
    def _cache_key_format(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # Format only; whether a key is required depends on the profile and is checked at start-up.
        from xhuma.store.crypto import parse_cache_keys, parse_hash_key

        if value is not None:
            parse = parse_cache_keys if info.field_name == "cache_keys" else parse_hash_key
            parse(value.get_secret_value())  # CacheKeyError is a ValueError: one line, no key material
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith(("postgresql://", "postgres://")):
            # The audit store is async: use the asyncpg driver for plain PostgreSQL URLs.
            return "postgresql+asyncpg://" + value.split("://", 1)[1]
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("must be a postgresql:// or sqlite+aiosqlite:// URL")
        return value

    @model_validator(mode="after")
    def _apply_profile_defaults(self) -> Settings:
        for name, value in PROFILE_DEFAULTS[self.profile].items():
            if name not in self.model_fields_set:
                object.__setattr__(self, name, value)
        return self

    # --- derived -------------------------------------------------------------------------------------
    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.working_dir / 'xhuma-audit.db').resolve()}"

    @property
    def home_community_urn(self) -> str:
        return f"urn:oid:{self.home_community_id}" if self.urn_oid_prefix else self.home_community_id

    @property
    def uses_simulator(self) -> bool:
        return self.profile is Profile.SIMULATOR

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


class ConfigurationError(Exception):
    """A setting is missing or wrong. ``str()`` is one line naming the key and the problem."""


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        loc = item.get("loc") or ()
        key = ENV_PREFIX + str(loc[0]).upper() if loc else "configuration"
        message = str(item.get("msg", "invalid value"))
        if item.get("type") == "extra_forbidden":
            message = "unknown setting"
        parts.append(f"{key}: {message}")
    return "; ".join(parts)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation failures into a one-line ``ConfigurationError``."""
    config_file = os.environ.get(CONFIG_FILE_ENV)
    if config_file and not Path(config_file).is_file():
        raise ConfigurationError(f"{CONFIG_FILE_ENV}: file not found: {config_file}")
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigurationError(_describe(error)) from None
    except ValueError as error:  # e.g. a malformed TOML file
        raise ConfigurationError(f"configuration: {error}".splitlines()[0]) from None


def masked_settings(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data with every secret masked (for ``xhuma config show``)."""
    data = settings.model_dump(mode="json")
    for name, value in list(data.items()):
        field_value = getattr(settings, name)
        if isinstance(field_value, SecretStr) or (
            isinstance(field_value, list) and field_value and isinstance(field_value[0], SecretStr)
        ):
            data[name] = "********" if value else value
        elif name in ("redis_url", "database_url") and isinstance(value, str) and "@" in value:
            scheme, rest = value.split("://", 1)
            data[name] = f"{scheme}://********@{rest.rsplit('@', 1)[1]}"
    return data


def reference_table() -> str:
    """The configuration reference as a Markdown table (README), generated from the Settings fields."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        if info.default_factory is not None:
            default: Any = info.default_factory()  # type: ignore[call-arg]
        else:
            default = info.default
        if isinstance(default, SecretStr):
            shown = "(secret)"
        elif default is None or default == []:
            shown = "(unset)"
        elif isinstance(default, StrEnum):
            shown = f"`{default.value}`"
        else:
            shown = f"`{json.dumps(default) if isinstance(default, list) else default}`"
        meaning = (info.description or "").replace("|", "\\|")
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {shown} | {meaning} |")
    return "\n".join(rows)


__all__ = [
    "CONFIG_FILE_ENV",
    "ENV_PREFIX",
    "ConfigurationError",
    "EntryType",
    "Profile",
    "SamlVerify",
    "Settings",
    "load_settings",
    "masked_settings",
    "reference_table",
]
