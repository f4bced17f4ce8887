"""``xhuma simulate``: the NHS simulator (PDS, SDS, GP Connect via an SSP) as a standalone HTTP server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from xhuma.cli import app, fail, settings_or_exit


@app.command()
def simulate(
    port: Annotated[int, typer.Option(help="port to listen on")] = 8100,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    data: Annotated[
        Path | None, typer.Option(help="GP Connect bundles directory (default: XHUMA_SIMULATOR_DATA, else samples)")
    ] = None,
    client_key: Annotated[
        Path | None,
        typer.Option(help="where to write the generated PDS client key when XHUMA_PDS_PRIVATE_KEY_FILE is unset"),
    ] = None,
    close_idle_after: Annotated[
        float | None,
        typer.Option(help="drop, unanswered, a request arriving on a keep-alive connection idle this many seconds "
                          "(a proxy's idle timeout racing the request)", min=0),
    ] = None,
    close_idle_reset: Annotated[
        bool, typer.Option(help="with --close-idle-after: reset the connection instead of closing it")
    ] = False,
) -> None:
    """Run the NHS simulator standalone and print the settings that point a gateway at it."""
    import uvicorn

    from xhuma.nhs.simulator.app import create_simulator_app
    from xhuma.nhs.simulator.records import load
    from xhuma.nhs.simulator.server import credentials_from_settings, http_protocol, simulator_config
    from xhuma.nhs.wiring import SIMULATOR_SDS_API_KEY
    from xhuma.observability import configure_logging

    settings = settings_or_exit()
    configure_logging(settings.log_level, settings.log_format)
    data_dir = data or settings.simulator_data
    if data_dir is not None and not data_dir.is_dir():
        raise fail(f"simulator data directory not found: {data_dir}", 2)
    credentials = credentials_from_settings(settings)
    key_file = settings.pds_private_key_file
    if key_file is None:
        # The gateway must sign its PDS client assertion with a key this simulator trusts: hand it over as a file.
        key_file = (client_key or settings.working_dir / "xhuma-simulator-client-key.pem").resolve()
        key_file.write_bytes(credentials.private_key_pem)
        os.chmod(key_file, 0o600)
    config, _ = simulator_config(
        settings, data=load(data_dir, default_ods=settings.simulator_default_ods), credentials=credentials,
        close_idle_after_seconds=close_idle_after, close_idle_reset=close_idle_reset,
    )
    base = f"http://{host}:{port}"
    typer.echo(f"NHS simulator on {base}: {len(config.data.patients)} patients, "
               f"{len(config.data.practices)} practices, {len(config.data.skipped)} files skipped")
    typer.echo("Point a gateway at it with:")
    settings_lines = {
        "XHUMA_PDS_BASE_URL": f"{base}/pds/personal-demographics/FHIR/R4",
        "XHUMA_PDS_TOKEN_URL": f"{base}/pds/oauth2/token",
        "XHUMA_SDS_BASE_URL": f"{base}/sds/spine-directory/FHIR/R4",
        "XHUMA_GPC_SSP_URL": f"{base}/ssp",
        "XHUMA_PDS_PRIVATE_KEY_FILE": str(key_file),
        "XHUMA_PDS_KID": credentials.kid,
        "XHUMA_PDS_API_KEY": credentials.api_key,
    }
    if settings.sds_api_key is None:
        settings_lines["XHUMA_SDS_API_KEY"] = SIMULATOR_SDS_API_KEY
    for name, value in settings_lines.items():
        typer.echo(f"  export {name}={value}")
    simulator = create_simulator_app(config)
    uvicorn.run(simulator, host=host, port=port, log_config=None, access_log=False,
                http=http_protocol(config, simulator.state.simulator))
