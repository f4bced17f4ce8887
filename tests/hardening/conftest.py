"""A running Xhuma (create_app on the embedded defaults, the built-in NHS simulator behind it) to attack."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.ihe.support import (
    ACTION_38,
    NHS_OID,
    SOAP_CT,
    SigningKey,
    assertion,
    body_of,
    cx,
    envelope,
    epic_statement,
    iti38_body,
    new_signing_key,
    parse_response,
    security_header,
)

from xhuma.app import create_app
from xhuma.config import Settings
from xhuma.ihe.demo import demo_demographics
from xhuma.nhs.simulator.patients import DEMO_PATIENT
from xhuma.records import DemographicQuery

DATA = Path(__file__).parent.parent / "data"
UNIQUE_ID_SCHEME = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"


@dataclass
class Target:
    client: TestClient
    settings: Settings
    signer: SigningKey
    unique_id: str  # the demo patient's CCD, fetched and cached once through ITI-38
    demographics: DemographicQuery

    @property
    def home(self) -> str:
        return self.settings.home_community_urn

    @property
    def repository(self) -> str:
        return self.settings.repository_unique_id

    def post(self, path: str, content: object, content_type: str | bytes = SOAP_CT) -> object:
        return self.client.post(path, content=content, headers={"content-type": content_type})  # type: ignore[arg-type]


def start(tmp: Path, **overrides: object) -> Iterator[Target]:
    """Xhuma with the simulator; the demo patient's document is fetched once so ITI-39 has something to serve."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("XHUMA_") and not name.startswith("XHUMA_TEST_"):
                patch.delenv(name)
        signer = new_signing_key()
        cert = tmp / "epic-signing.pem"
        cert.write_bytes(signer.cert_pem)
        options: dict[str, object] = {"working_dir": tmp, "saml_trusted_certs": [cert], "admin_tokens": ["a" * 40]}
        options.update(overrides)
        settings = Settings(**options)  # type: ignore[arg-type]
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            security = security_header(assertion(epic_statement(DATA, resource_id=cx(DEMO_PATIENT)), signer=signer))
            response = client.post("/SOAP/iti38", headers={"content-type": SOAP_CT},
                                   content=envelope(ACTION_38, iti38_body(nhs=DEMO_PATIENT), security=security))
            entry = body_of(parse_response(response)).find(
                f".//{{*}}ExternalIdentifier[@identificationScheme='{UNIQUE_ID_SCHEME}']")
            assert entry is not None, response.text[:500]
            yield Target(client, settings, signer, entry.get("value", ""), demo_demographics(DEMO_PATIENT))


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    yield from start(tmp_path_factory.mktemp("xhuma"))


__all__ = ["NHS_OID", "Target", "start"]
