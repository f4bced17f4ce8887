"""Command line: ``xhuma serve | config show | db upgrade | convert | validate | demo | simulate | cache | audit``.

Sub-commands of the other capabilities are registered from their own modules at the bottom of this file.
Every failure is one line on stderr and an exit status of the table below (README, Command line); never a traceback.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperOption

from xhuma import __version__
from xhuma.config import CONFIG_FILE_ENV, ConfigurationError, Settings, load_settings, masked_settings

# Exit statuses of every command (README, Command line): scripts and orchestrators tell these apart.
EXIT_OK = 0
EXIT_FAILED = 1  # an invalid document, a failed conversion, demo or operation
EXIT_USAGE = 2  # a wrong argument or option (click's own usage errors use 2 as well)
EXIT_CONFIGURATION = 3  # the settings cannot work: nothing was attempted


def _value_type(option: TyperOption, ctx: object) -> str | None:
    """The type column of an option in the help: none for a flag, which takes no value. Typer 0.29 prints the
    annotation (``<bool>``) for flags too, as if ``--validate`` took a value; this is the one place that fixes it
    for every boolean option of every command, ``--help`` included."""
    if option.is_flag and not option.count:
        return None
    return _typer_value_type(option, ctx)  # type: ignore[arg-type]


_typer_value_type = TyperOption.display_type_rich
TyperOption.display_type_rich = _value_type  # type: ignore[method-assign,assignment]

app = typer.Typer(
    name="xhuma",
    help="IHE XCPD/XCA responding gateway over NHS PDS, SDS and GP Connect.\n\n"
    "Exit status: 0 ok, 1 invalid or failed, 2 usage error, 3 configuration error.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the audit database.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear line to stderr and return the Exit to raise."""
    typer.echo(f"xhuma: {message}", err=True)
    return typer.Exit(code)


def settings_or_exit(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigurationError as error:
        raise fail(f"configuration error: {error}", EXIT_CONFIGURATION) from None


def refuse_insecure_or_exit(settings: Settings) -> None:
    """Strict profiles need client authentication, SAML verification, the audit key and admin auth: one line
    per missing item, exit 3 (xhuma.security.startup)."""
    from xhuma.security.startup import security_problems

    problems = security_problems(settings)
    for problem in problems:
        typer.echo(f"xhuma: configuration error: {problem}", err=True)
    if problems:
        raise typer.Exit(EXIT_CONFIGURATION)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"xhuma {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def root(
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file of settings (keys as in XHUMA_*, lower case)")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    if config is not None:
        os.environ[CONFIG_FILE_ENV] = str(config)
    from xhuma.observability import configure_logging

    # Warnings of any command go to stderr as structured lines (serve, simulate and demo reconfigure).
    configure_logging("WARNING")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 1,
    timeout_graceful_shutdown: Annotated[
        int,
        typer.Option(
            min=1,
            help="on SIGTERM, seconds in-flight requests may take before they are cancelled (the audit store is "
            "flushed after); 8 fits the 10 s stop timeout of docker, podman and Compose",
        ),
    ] = 8,
) -> None:
    """Run the gateway under uvicorn."""
    import uvicorn

    settings = settings_or_exit()
    refuse_insecure_or_exit(settings)
    from xhuma.replicas import replica_problem

    problem = replica_problem(settings, workers)  # state the workers (and other replicas) must share
    if problem:
        raise fail(f"configuration error: {problem}", EXIT_CONFIGURATION)
    from xhuma.observability import configure_logging
    from xhuma.security.tls import uvicorn_options
    from xhuma.store.crypto import CacheKeyring
    from xhuma.store.tls import check_serve_tls, serve_tls_options

    try:  # data protection: cache keys (required in strict profiles), the TLS certificate and key
        CacheKeyring.from_settings(settings)
        check_serve_tls(settings)
    except ConfigurationError as error:
        raise fail(f"configuration error: {error}", EXIT_CONFIGURATION) from None
    configure_logging(settings.log_level, settings.log_format)
    if settings.effective_database_url.startswith("sqlite"):
        # The embedded SQLite audit file is migrated once here, before the workers start (each worker's start-up
        # migration then finds the head revision); PostgreSQL is migrated by `xhuma db upgrade`.
        from sqlalchemy.exc import SQLAlchemyError

        from xhuma.store.audit import upgrade

        try:
            upgrade(settings.effective_database_url)
        except (SQLAlchemyError, OSError) as error:
            raise fail(f"audit database upgrade failed: {type(error).__name__}: {str(error).splitlines()[0]}") from None
    uvicorn.run(
        "xhuma.app:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        # TLS termination (certificate, key, TLS 1.2 minimum), then client-certificate verification against
        # XHUMA_TLS_CLIENT_CA_FILE and the protocol class that hands the peer certificate to the app.
        **{**serve_tls_options(settings), **uvicorn_options(settings)},
    )


@config_app.command("show")
def config_show() -> None:
    """Print the effective settings (secrets masked) as JSON."""
    settings = settings_or_exit()
    typer.echo(json.dumps(masked_settings(settings), indent=2, sort_keys=True))


@config_app.command("reference")
def config_reference() -> None:
    """Print the configuration reference table (Markdown) generated from the settings."""
    from xhuma.config import reference_table

    typer.echo(reference_table())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the audit database migrations."""
    from sqlalchemy.exc import SQLAlchemyError

    from xhuma.store.audit import upgrade

    settings = settings_or_exit()
    try:
        upgrade(settings.effective_database_url)
    except (SQLAlchemyError, OSError) as error:
        raise fail(f"database upgrade failed: {type(error).__name__}: {str(error).splitlines()[0]}") from None
    typer.echo("audit database is at the latest revision")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as error:
        # A file a command was told to read or write cannot be (read-only, missing parent, a directory, disk full):
        # one line naming the path and the reason, exit 1, never a traceback.
        where = f"{error.filename}: " if error.filename else ""
        typer.echo(f"xhuma: {where}{error.strerror or type(error).__name__}", err=True)
        sys.exit(1)


# --- sub-commands of other capabilities: each module registers its own commands on `app` ---------------------
for _module in (
    "xhuma.ccda.cli",  # xhuma convert | validate
    "xhuma.ihe.demo",  # xhuma demo
    "xhuma.nhs.cli",  # xhuma simulate
    "xhuma.store.cache_cli",  # xhuma cache purge | new-key
    "xhuma.store.audit_cli",  # xhuma audit export | prune
):
    importlib.import_module(_module)
