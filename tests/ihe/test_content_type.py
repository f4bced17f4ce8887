"""Content-Type parameters of SOAP 1.2 and MTOM requests (RFC 9110 §8.3.1, RFC 2387 multipart/related)."""

from __future__ import annotations

import pytest

from xhuma.ihe.soap import content_type_params


def test_mtom_parameters_are_unquoted_with_lower_case_names() -> None:
    media, params = content_type_params(
        'Multipart/Related; Type="application/xop+xml"; boundary="uuid:a;b=c"; start="<root@x>"; '
        'start-info="application/soap+xml"'
    )
    assert media == "multipart/related"
    assert params == {"type": "application/xop+xml", "boundary": "uuid:a;b=c", "start": "<root@x>",
                      "start-info": "application/soap+xml"}


def test_soap_action_parameter_of_soap_1_2() -> None:
    header = 'application/soap+xml;charset=UTF-8;action="urn:ihe:iti:2007:CrossGatewayQuery"'
    media, params = content_type_params(header)
    assert media == "application/soap+xml"
    assert params["action"] == "urn:ihe:iti:2007:CrossGatewayQuery"
    assert params["charset"] == "UTF-8"


@pytest.mark.parametrize(
    ("header", "expected"), [("", "text/plain"), ("garbage", "text/plain"), ("text/xml", "text/xml")]
)
def test_missing_or_malformed_media_type_defaults_like_rfc_2045(header: str, expected: str) -> None:
    assert content_type_params(header)[0] == expected


def test_escaped_quote_inside_a_quoted_value() -> None:
    assert content_type_params('a/b; q="x\\"y"')[1] == {"q": 'x"y'}


def test_whitespace_a_latin_1_header_value_may_hold_around_a_parameter_is_skipped() -> None:
    # Every character Python's \s matches below U+0100 (header values are decoded as Latin-1), tab, form feed,
    # the information separators, NEL and no-break space among them.
    spaces = "".join(chr(code) for code in range(256) if chr(code).isspace())
    media, params = content_type_params(f'multipart/related;{spaces}boundary{spaces}={spaces}"b1";start=<r@x>')
    assert media == "multipart/related"
    assert params == {"boundary": "b1", "start": "<r@x>"}
