"""NHS number: its identifier system and OID, normalisation and the Modulus 11 check (SPEC §9).

The one home of the NHS number: every module that names, normalises or checks one uses this module.

Numbers are strings throughout (leading zeros in the Scottish and Northern Irish ranges). A passing checksum
does not prove that the number exists: PDS remains the authority. Invalid numbers are refused here, before any
call, so they never reach an upstream.
"""

from __future__ import annotations

from typing import Final

from xhuma.errors import InvalidNhsNumber

# FHIR identifier system (NHS Digital naming) and the HL7 v3 / CDA root OID of the NHS number.
NHS_NUMBER_SYSTEM: Final = "https://fhir.nhs.uk/Id/nhs-number"
NHS_NUMBER_OID: Final = "2.16.840.1.113883.2.1.4.1"

_WEIGHTS = range(10, 1, -1)  # digits 1-9 weighted 10..2


def normalise(raw: str) -> str:
    """Strip the spaces and hyphens people write NHS numbers with (``943 476 5919``, ``943-476-5919``)."""
    return "".join(char for char in str(raw) if not char.isspace() and char != "-")


def check_digit(first_nine: str) -> int | None:
    """The Modulus 11 check digit for nine digits, or None when no valid check digit exists (check == 10)."""
    total = sum(int(digit) * weight for digit, weight in zip(first_nine, _WEIGHTS, strict=True))
    check = 11 - total % 11
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def is_valid_nhs_number(raw: str) -> bool:
    number = normalise(raw)
    if len(number) != 10 or not number.isascii() or not number.isdigit():
        return False
    return check_digit(number[:9]) == int(number[9])


def same_nhs_number(first: str, second: str) -> bool:
    """Whether two written forms name the same number (``943 476 5919`` and ``9434765919`` do)."""
    return normalise(first) == normalise(second)


def validate_nhs_number(raw: str) -> str:
    """Return the normalised number or raise InvalidNhsNumber (the message never repeats the number)."""
    number = normalise(raw)
    if not is_valid_nhs_number(number):
        raise InvalidNhsNumber()
    return number


__all__ = [
    "NHS_NUMBER_OID",
    "NHS_NUMBER_SYSTEM",
    "check_digit",
    "is_valid_nhs_number",
    "normalise",
    "same_nhs_number",
    "validate_nhs_number",
]
