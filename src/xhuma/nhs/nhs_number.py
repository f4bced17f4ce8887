"""NHS number: Modulus 11 check (SPEC §9).

Numbers are strings throughout (leading zeros in the Scottish and Northern Irish ranges). A passing checksum
does not prove that the number exists: PDS remains the authority. Invalid numbers are refused here, before any
call, so they never reach an upstream.
"""

from __future__ import annotations

from xhuma.errors import InvalidNhsNumber

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


def validate_nhs_number(raw: str) -> str:
    """Return the normalised number or raise InvalidNhsNumber (the message never repeats the number)."""
    number = normalise(raw)
    if not is_valid_nhs_number(number):
        raise InvalidNhsNumber()
    return number


__all__ = ["check_digit", "is_valid_nhs_number", "normalise", "validate_nhs_number"]
