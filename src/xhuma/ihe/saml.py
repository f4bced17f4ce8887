"""XUA: the SAML 2.0 assertion in ``wsse:Security`` (SPEC §4; LESSONS 13).

The attributes are read only from the element the signature covers (signxml's ``signed_xml``), so a wrapped
unsigned copy cannot smuggle a different user in. Checks: signature against the trusted certificates from
settings, ``NotBefore``/``NotOnOrAfter`` with clock skew (``NotOnOrAfter`` required, the lifetime capped by
``XHUMA_SAML_MAX_LIFETIME_SECONDS``), audience, purpose of use in the allowed list, ``resource-id`` naming the
patient of the request (required unless ``XHUMA_SAML_REQUIRE_RESOURCE_ID=false``), and one use per assertion
(``ReplayGuard``: its ID is remembered until it expires, in the shared cache across replicas).
``XHUMA_SAML_VERIFY=required`` turns a failure into a WS-Security Fault; ``optional`` logs it (reason code only)
and continues with ``verified=False``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier
from signxml.exceptions import SignXMLException

from xhuma.config import SamlVerify, Settings
from xhuma.errors import CacheError, SecurityError
from xhuma.ihe.soap import WSSE
from xhuma.nhs.nhs_number import NHS_NUMBER_OID, same_nhs_number
from xhuma.observability import level_enabled
from xhuma.ports import Cache, CallerIdentity
from xhuma.store.cache import MemoryCache
from xhuma.store.keys import CacheKeys

log = structlog.get_logger(__name__)
_log_info = level_enabled(__name__)
UNIDENTIFIED = CallerIdentity()

SAML2 = "urn:oasis:names:tc:SAML:2.0:assertion"
HL7 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

ATTR_SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
ATTR_ORGANIZATION = "urn:oasis:names:tc:xspa:1.0:subject:organization"
ATTR_ORGANIZATION_ID = "urn:oasis:names:tc:xspa:1.0:subject:organization-id"
ATTR_HOME_COMMUNITY = ("urn:nhin:names:saml:homeCommunityId", "urn:ihe:iti:xca:2010:homeCommunityId")
ATTR_ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
ATTR_PURPOSE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
ATTR_RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"



class SamlRejected(SecurityError):
    """The SAML assertion is not acceptable."""

    code = "SamlRejected"

    def __init__(self, message: str, *, reason: str, wsse_code: str = "FailedAuthentication") -> None:
        super().__init__(message, detail=reason)
        self.reason = reason  # PHI-free machine code for logs and the audit trail
        self.wsse_code = wsse_code


def find_assertion(security: etree._Element | None) -> etree._Element | None:
    if security is None:
        return None
    return security.find(f"{{{SAML2}}}Assertion")


def _attribute_values(statement: etree._Element, name: str) -> list[etree._Element]:
    values: list[etree._Element] = []
    for attribute in statement.iterfind(f"{{{SAML2}}}Attribute"):
        if attribute.get("Name") == name:
            values.extend(attribute.iterfind(f"{{{SAML2}}}AttributeValue"))
    return values


def _first_text(statement: etree._Element, *names: str) -> str | None:
    for name in names:
        for value in _attribute_values(statement, name):
            text = "".join(value.itertext()).strip()
            if text:
                return text
    return None


def _coded(statement: etree._Element, name: str, element_names: Sequence[str]) -> tuple[str | None, str | None]:
    """An HL7 CE inside an AttributeValue (Role, PurposeOfUse or Epic's PurposeForUse), or plain text."""
    for value in _attribute_values(statement, name):
        for child in value:
            if isinstance(child.tag, str) and etree.QName(child).localname in element_names:
                return child.get("code"), child.get("displayName")
        text = "".join(value.itertext()).strip()
        if text:
            return text, None
    return None, None


def identity_from_statement(statement: etree._Element | None, *, verified: bool = False) -> CallerIdentity:
    """The caller identity from an ``AttributeStatement`` (Epic sends the full XSPA set; SPEC §4.2)."""
    if statement is None:
        return CallerIdentity(verified=verified)
    role_code, role_display = _coded(statement, ATTR_ROLE, ("Role",))
    purpose_code, _ = _coded(statement, ATTR_PURPOSE, ("PurposeOfUse", "PurposeForUse"))
    subject = _first_text(statement, ATTR_SUBJECT_ID)
    return CallerIdentity(
        user_id=subject,
        user_name=subject,
        role_code=role_code,
        role_display=role_display,
        organization=_first_text(statement, ATTR_ORGANIZATION),
        organization_id=_first_text(statement, ATTR_ORGANIZATION_ID),
        home_community_id=_first_text(statement, *ATTR_HOME_COMMUNITY),
        purpose_of_use=purpose_code,
        resource_id=_first_text(statement, ATTR_RESOURCE_ID),
        verified=verified,
    )


def identity_from_assertion(assertion: etree._Element, *, verified: bool = False) -> CallerIdentity:
    identity = identity_from_statement(assertion.find(f"{{{SAML2}}}AttributeStatement"), verified=verified)
    name_id = assertion.findtext(f"{{{SAML2}}}Subject/{{{SAML2}}}NameID")
    if name_id and name_id.strip():
        identity = replace(identity, user_id=name_id.strip())
    return identity


def resource_nhs_number(resource_id: str | None) -> str | None:
    """The NHS number in a CX ``resource-id`` (``N^^^&2.16.840.1.113883.2.1.4.1&ISO``), if it names one."""
    if not resource_id:
        return None
    parts = resource_id.strip().split("^")
    if len(parts) >= 4 and NHS_NUMBER_OID in parts[3].split("&"):
        return parts[0].strip()
    return None


def _instant(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SamlRejected("The SAML assertion has an invalid time", reason="SamlBadTime") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class ReplayGuard:
    """One use per SAML assertion: its key is added (set-if-absent) until the assertion expires.

    The shared cache (Redis) makes the rule hold across replicas; an in-process record is kept as well, so that
    a replay to this replica is still refused while the shared cache fails or when there is none. During a Redis
    outage an assertion first used at another replica can be accepted once here (docs/security.md).
    """

    def __init__(self, shared: Cache | None = None, *, memory_items: int = 100_000) -> None:
        self._shared = shared
        self._local = MemoryCache(memory_items)

    async def first_use(self, key: str, ttl_seconds: int) -> bool:
        """True the first time ``key`` is seen within ``ttl_seconds``, False for a replay."""
        if not await self._local.add(key, b"1", ttl_seconds):
            return False
        if self._shared is None:
            return True
        try:
            return await self._shared.add(key, b"1", ttl_seconds)
        except CacheError:
            # The failure is logged and reported to readiness by the cache; this replica's record still holds.
            return True


class SamlVerifier:
    """Verifies XUA assertions with the settings' trusted certificates, audience, skew, lifetime, purposes of
    use and patient, and (``admit``) one use per assertion through ``replay_cache``."""

    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] | None = None,
                 replay_cache: Cache | None = None) -> None:
        self._settings = settings
        self._required = settings.saml_verify is SamlVerify.REQUIRED
        self._clock = clock or (lambda: datetime.now(UTC))
        self._skew = timedelta(seconds=settings.saml_clock_skew_seconds)
        self._max_lifetime = timedelta(seconds=settings.saml_max_lifetime_seconds)
        self._require_resource_id = settings.saml_require_resource_id
        self.replays = ReplayGuard(replay_cache, memory_items=settings.saml_replay_memory_items)
        self._trusted: list[str] = [Path(path).read_text(encoding="ascii") for path in settings.saml_trusted_certs]
        self._audiences = set(settings.saml_audience)
        self._purposes = {purpose.upper() for purpose in settings.allowed_purposes_of_use}
        self._config = SignatureConfiguration(require_x509=True, expect_references=1)

    @property
    def required(self) -> bool:
        return self._required

    def identify(self, security: etree._Element | None) -> CallerIdentity:
        """Verify the assertion and return the caller; in ``optional`` mode a failure gives ``verified=False``.
        Requests are admitted with ``admit``, which adds the one-use rule."""
        return self._identify(security)[0]

    async def admit(self, security: etree._Element | None) -> CallerIdentity:
        """``identify``, and a verified assertion must not have been used before (SamlReplayed)."""
        identity, use = self._identify(security)
        if use is None or await self.replays.first_use(*use):
            return identity
        return self._refused(identity, SamlRejected("The SAML assertion has already been used",
                                                    reason="SamlReplayed"))

    def _identify(self, security: etree._Element | None) -> tuple[CallerIdentity, tuple[str, int] | None]:
        """The caller, and for a verified assertion its replay key and how long to keep it (seconds)."""
        assertion = find_assertion(security)
        if assertion is None and not self._required:
            # Optional mode without an assertion: the caller is served unidentified (audited saml_verified=false),
            # the expected state of such a deployment.
            if _log_info():
                log.info("saml_not_verified", reason="SamlMissing", mode="optional")
            return UNIDENTIFIED, None
        try:
            if assertion is None:
                raise SamlRejected("A SAML assertion is required", reason="SamlMissing", wsse_code="InvalidSecurity")
            signed = self._verify_signature(assertion)
            assertion_id = signed.get("ID")
            if not assertion_id:
                raise SamlRejected("The SAML assertion has no ID", reason="SamlNoId", wsse_code="InvalidSecurity")
            expires = self._check_conditions(signed)
            identity = identity_from_assertion(signed, verified=True)
            self._check_purpose(identity)
        except SamlRejected as rejected:
            if self._required:
                raise
            # Optional mode: the caller is served unverified (the audit records saml_verified=false).
            log.warning("saml_not_verified", reason=rejected.reason, mode="optional")
            assert assertion is not None  # an absent assertion in optional mode returned above
            return identity_from_assertion(assertion), None
        # Remembered until no clock within the skew would still accept it.
        keep = math.ceil((expires + self._skew - self._clock()).total_seconds())
        issuer = (signed.findtext(f"{{{SAML2}}}Issuer") or "").strip()
        return identity, (CacheKeys.saml_assertion(issuer, assertion_id), max(keep, 1))

    def _refused(self, identity: CallerIdentity, rejected: SamlRejected) -> CallerIdentity:
        if self._required:
            raise rejected
        log.warning("saml_not_verified", reason=rejected.reason, mode="optional")
        return replace(identity, verified=False)

    def check_patient(self, identity: CallerIdentity, nhs_number: str | None) -> CallerIdentity:
        """``resource-id`` must name the patient of the request (SPEC §4.3 item 7); with
        ``XHUMA_SAML_REQUIRE_RESOURCE_ID`` (the default, Epic sends it) an assertion without one is refused too."""
        if not identity.verified:  # nothing verified to bind to the patient (optional mode)
            return identity
        named = resource_nhs_number(identity.resource_id)
        if named is None:
            if not self._require_resource_id:
                return identity
            rejected = SamlRejected("The SAML assertion does not name the patient (resource-id)",
                                    reason="SamlNoResourceId")
        elif nhs_number is None or same_nhs_number(named, nhs_number):
            return identity
        else:
            rejected = SamlRejected("The assertion is about another patient", reason="SamlResourceMismatch")
        return self._refused(identity, rejected)

    # --- checks ------------------------------------------------------------------------------------------------
    def _verify_signature(self, assertion: etree._Element) -> etree._Element:
        if assertion.find("{http://www.w3.org/2000/09/xmldsig#}Signature") is None:
            raise SamlRejected("The SAML assertion is not signed", reason="SamlUnsigned")
        if not self._trusted:
            raise SamlRejected("No trusted SAML signing certificate is configured", reason="SamlNoTrustedCert")
        data = etree.tostring(assertion)
        for certificate in self._trusted:
            try:
                result = XMLVerifier().verify(data, x509_cert=certificate, expect_config=self._config)
            except (SignXMLException, ValueError, etree.LxmlError):
                # Any signxml refusal (a malformed or empty ds:Signature is DocumentInvalid), or input lxml or the
                # crypto layer cannot read: this certificate does not verify it (a WS-Security fault, never a 500).
                continue
            signed = result[0].signed_xml if isinstance(result, list) else result.signed_xml
            # Anti-wrapping: the element the signature covers must be the assertion we were given.
            if (
                signed is None
                or etree.QName(signed).text != f"{{{SAML2}}}Assertion"
                or signed.get("ID") != assertion.get("ID")
            ):
                raise SamlRejected("The SAML signature does not cover the assertion", reason="SamlWrapped")
            return signed
        raise SamlRejected("The SAML signature is not valid or not trusted", reason="SamlBadSignature")

    def _check_conditions(self, assertion: etree._Element) -> datetime:
        """The checks of ``Conditions``; returns ``NotOnOrAfter``."""
        now = self._clock()
        conditions = assertion.find(f"{{{SAML2}}}Conditions")
        if conditions is None:
            raise SamlRejected("The SAML assertion has no Conditions", reason="SamlNoConditions")
        not_before = _instant(conditions.get("NotBefore"))
        not_on_or_after = _instant(conditions.get("NotOnOrAfter"))
        # An assertion without an end would be valid (and replayable) for ever.
        if not_on_or_after is None:
            raise SamlRejected("The SAML assertion has no NotOnOrAfter", reason="SamlNoExpiry",
                               wsse_code="InvalidSecurity")
        if not_before is not None and now + self._skew < not_before:
            raise SamlRejected("The SAML assertion is not yet valid", reason="SamlNotYetValid",
                               wsse_code="MessageExpired")
        if now - self._skew >= not_on_or_after:
            raise SamlRejected("The SAML assertion has expired", reason="SamlExpired", wsse_code="MessageExpired")
        valid_from = not_before or _instant(assertion.get("IssueInstant"))
        if valid_from is None:
            raise SamlRejected("The SAML assertion has no IssueInstant", reason="SamlBadTime",
                               wsse_code="InvalidSecurity")
        if not_on_or_after - valid_from > self._max_lifetime:
            raise SamlRejected("The SAML assertion is valid for longer than this gateway accepts",
                               reason="SamlLifetimeTooLong")
        audiences = {
            (audience.text or "").strip()
            for audience in conditions.iterfind(f"{{{SAML2}}}AudienceRestriction/{{{SAML2}}}Audience")
        }
        # With audiences configured, the assertion must name one of them: an assertion without an
        # AudienceRestriction is valid for any relying party, so it could be replayed here (XUA, SAML core 2.5.1.4).
        if self._audiences and not (audiences & self._audiences):
            raise SamlRejected("The SAML assertion is not for this service", reason="SamlAudience")
        return not_on_or_after

    def _check_purpose(self, identity: CallerIdentity) -> None:
        if not identity.purpose_of_use or identity.purpose_of_use.upper() not in self._purposes:
            raise SamlRejected("The purpose of use is not allowed", reason="SamlPurposeOfUse")


__all__ = [
    "WSSE",
    "ReplayGuard",
    "SamlRejected",
    "SamlVerifier",
    "find_assertion",
    "identity_from_assertion",
    "identity_from_statement",
    "resource_nhs_number",
]
