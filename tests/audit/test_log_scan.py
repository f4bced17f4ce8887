"""Issue 6, done-when: run `xhuma serve` as a real process (DEBUG, JSON logs), do a full ITI-55 -> ITI-38 -> ITI-39
exchange against it over HTTP, stop it, and scan every line it wrote: no NHS number, patient name or birth date
(LESSONS 29)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from tests.support.exchange import AUDIENCE, IDENTIFYING, NHS_NUMBER, forwarded_cert_headers, full_exchange, signed_by
from tests.support.pki import Pki, trusted_signing_key
from tests.support.servers import free_port


def test_every_log_line_of_a_full_exchange_is_free_of_patient_identifiers(tmp_path: Path, data_dir: Path) -> None:
    pki = Pki(tmp_path / "pki")
    epic = pki.issue("Epic Gateway", organisation="UCLH")
    signer, saml_cert = trusted_signing_key(tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("XHUMA_")}
    env.update(
        XHUMA_LOG_LEVEL="DEBUG", XHUMA_LOG_FORMAT="json", XHUMA_WORKING_DIR=str(tmp_path),
        XHUMA_AUDIT_HMAC_KEY="k" * 40, XHUMA_SAML_VERIFY="required",
        XHUMA_SAML_TRUSTED_CERTS=json.dumps([str(saml_cert)]), XHUMA_SAML_AUDIENCE=json.dumps([AUDIENCE]),
        XHUMA_TLS_CLIENT_CA_FILE=str(pki.ca.cert_file), XHUMA_CLIENT_CERT_ALLOW_LIST=json.dumps([epic.subject]),
        XHUMA_TRUSTED_PROXIES=json.dumps(["127.0.0.1"]), XHUMA_ADMIN_TOKENS=json.dumps(["a" * 40]),
    )
    log_file = (tmp_path / "xhuma.log").open("wb")  # a file, not a pipe: DEBUG output must never block the server
    process = subprocess.Popen([sys.executable, "-m", "xhuma", "serve", "--port", str(port)], cwd=tmp_path, env=env,
                               stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "xhuma.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "xhuma serve did not become ready"
            time.sleep(0.2)

        async def run() -> Any:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                done = await full_exchange(client, security=signed_by(data_dir, signer),
                                           headers=forwarded_cert_headers(epic.pem))
                audit = await client.get("/api/audit", params={"nhs_number": NHS_NUMBER},
                                         headers={"Authorization": "Bearer " + "a" * 40})
                return done, audit.json()

        done, audit = asyncio.run(run())
    finally:
        process.terminate()
        process.wait(timeout=30)
        log_file.close()

    assert NHS_NUMBER in done.ccd.decode()  # the record was disclosed...
    # (SDS is looked up by practice, not patient, so it is not among this patient's events.)
    assert {item["transaction"] for item in audit["items"]} >= {"ITI-55", "ITI-38", "ITI-39", "PDS", "GPC"}
    lines = (tmp_path / "xhuma.log").read_text(errors="replace").splitlines()
    # ...and the process really logged the exchange (the scan is not of an empty file).
    assert len(lines) > 10 and any("ITI-39" in line or "iti39" in line for line in lines), lines[-20:]
    leaks = [(value, line[:200]) for line in lines for value in IDENTIFYING if value.lower() in line.lower()]
    assert leaks == []
