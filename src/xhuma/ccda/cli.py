"""``xhuma convert`` and ``xhuma validate`` (registered on the main typer app by xhuma.cli)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from xhuma.ccda.context import NO_TERMINOLOGY, ConversionContext, TerminologyFacts, context_from_settings
from xhuma.ccda.document import NotAStructuredRecord, convert
from xhuma.cli import EXIT_FAILED, EXIT_OK, app, fail, settings_or_exit


@dataclass(slots=True)
class Outcome:
    source: Path
    target: Path | None = None
    error: str | None = None
    entries: int = 0
    warnings: int = 0
    valid: bool | None = None
    findings: list[str] | None = None
    report: dict[str, Any] | None = None


def _context(now: str | None) -> ConversionContext:
    moment = None
    if now is not None:
        try:
            moment = datetime.fromisoformat(now)
        except ValueError:
            raise fail(f"--now is not an ISO 8601 date-time: {now!r}") from None
    return context_from_settings(settings_or_exit(), moment)


Resolver = Callable[[Any], TerminologyFacts]


def _no_terminology(bundle: Any) -> TerminologyFacts:
    return NO_TERMINOLOGY


@contextmanager
def _terminology(choice: str | None) -> Iterator[Resolver]:
    """``--terminology``: a server URL, ``packaged`` (the simulator's subset) or ``none`` (the documented fallbacks);
    default: XHUMA_TERMINOLOGY_URL when set, else ``packaged``. A server that fails falls back, with one line."""
    from xhuma.nhs.terminology import packaged_facts

    settings = settings_or_exit()
    choice = choice or settings.terminology_url or "packaged"
    if choice == "none":
        yield _no_terminology
        return
    if choice == "packaged":
        yield packaged_facts
        return
    if not choice.startswith(("http://", "https://")):
        raise fail(f"--terminology is a URL, 'packaged' or 'none': {choice!r}")
    yield from _server_terminology(choice, settings)


def _server_terminology(url: str, settings: Any) -> Iterator[Resolver]:
    import asyncio

    from xhuma.errors import XhumaError
    from xhuma.nhs.terminology import TerminologyClient
    from xhuma.nhs.transport import build_upstream
    from xhuma.store.cache import MemoryCache

    def secret(value: Any) -> str | None:
        return value.get_secret_value() if value is not None else None

    with asyncio.Runner() as runner:
        upstream = build_upstream("terminology", settings, mutual_tls=False)
        client = TerminologyClient(
            settings, upstream, MemoryCache(max_items=100_000), base_url=url,
            token_url=settings.terminology_token_url, client_id=secret(settings.terminology_client_id),
            client_secret=secret(settings.terminology_client_secret),
        )

        def resolve(bundle: Any) -> TerminologyFacts:
            try:
                return runner.run(client.facts_for(bundle))
            except XhumaError as error:
                typer.echo(f"xhuma: terminology server unavailable ({error.code}); documented fallbacks apply",
                           err=True)
                return NO_TERMINOLOGY

        try:
            yield resolve
        finally:
            runner.run(upstream.client.aclose())


def _convert_one(source: Path, context: ConversionContext, validate: bool,
                 terminology: Resolver = _no_terminology) -> tuple[Outcome, bytes | None]:
    outcome = Outcome(source)
    try:
        bundle = orjson.loads(source.read_bytes())
    except (OSError, ValueError) as error:
        outcome.error = f"{source}: unreadable JSON ({type(error).__name__}: {str(error).splitlines()[0]})"
        return outcome, None
    try:
        # Terminology is looked up only for a bundle-shaped object; convert() refuses anything else with its reason.
        facts = terminology(bundle) if isinstance(bundle, dict) else _no_terminology(bundle)
        conversion = convert(bundle, replace(context, terminology=facts))
    except NotAStructuredRecord as error:
        outcome.error = f"{source}: {error.message}"
        return outcome, None
    counts = conversion.report["counts"]
    outcome.entries = sum(area["entries"] for area in counts["sections"].values())
    outcome.warnings = len(conversion.report["warnings"])
    outcome.report = conversion.report
    if validate:
        from xhuma.ccda.validate import validate_bytes

        result = validate_bytes(conversion.xml)
        outcome.valid = result.valid
        outcome.findings = [str(f) for f in result.findings]
    return outcome, conversion.xml


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An output that cannot be written (a file where a directory should be, read-only, disk full) is one line
    naming it and exit 1, never a traceback."""
    try:
        yield
    except OSError as error:
        raise fail(f"{path}: cannot write ({error.strerror or type(error).__name__})") from None


@app.command("convert")
def convert_command(
    source: Annotated[Path, typer.Argument(help="GP Connect structured-record bundle (JSON) or a directory of them")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="CCD file, or directory for a batch")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="write the conversion report (JSON) here")] = None,
    validate: Annotated[bool, typer.Option("--validate", help="validate output (CDA schema + C-CDA schematron)")]
    = False,
    now: Annotated[str | None, typer.Option("--now", help="document time (ISO 8601); default: from the bundle")]
    = None,
    terminology: Annotated[str | None, typer.Option(
        "--terminology", help="URL of a terminology server, 'packaged' (the built-in subset) or 'none'; default: "
        "XHUMA_TERMINOLOGY_URL, else packaged")] = None,
) -> None:
    """Convert GP Connect structured records to C-CDA R2.1 CCDs. Exit 1: bad input or output failed validation."""
    context = _context(now)
    with _terminology(terminology) as resolve:
        _convert_command(source, output, report, validate, context, resolve)


def _convert_command(source: Path, output: Path | None, report: Path | None, validate: bool,
                     context: ConversionContext, resolve: Resolver) -> None:
    if source.is_dir():
        raise typer.Exit(_convert_directory(source, output, report, validate, context, resolve))
    if not source.exists():
        raise fail(f"{source}: no such file")
    outcome, xml = _convert_one(source, context, validate, resolve)
    if outcome.error or xml is None:
        raise fail(outcome.error or f"{source}: conversion failed")
    if output is None:
        sys.stdout.buffer.write(xml)
        sys.stdout.buffer.flush()
    else:
        with _writing(output):
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_bytes(xml)
    if report is not None:
        with _writing(report):
            report.write_text(json.dumps(outcome.report, indent=2), encoding="utf-8")
    if outcome.valid is False:
        for finding in outcome.findings or []:
            typer.echo(finding, err=True)
        raise fail(f"{source}: output failed validation ({len(outcome.findings or [])} findings)", EXIT_FAILED)
    # One line on stderr, so that the CCD alone is on stdout when no -o is given.
    where = f" to {output}" if output is not None else ""
    checked = ", valid" if outcome.valid else ""
    typer.echo(f"xhuma: converted {source}{where}: {outcome.entries} entries, {outcome.warnings} warnings{checked}",
               err=True)


def _summary_table(source: Path, outcomes: list[Outcome], validate: bool) -> Any:
    from rich.table import Table

    table = Table(title=f"{len(outcomes)} bundles")
    for column in ("bundle", "result", "entries", "warnings", *(["valid"] if validate else [])):
        table.add_column(column)
    for outcome in outcomes:
        cells = [str(outcome.source.relative_to(source)), outcome.error or "converted", str(outcome.entries),
                 str(outcome.warnings)]
        if validate:
            cells.append("-" if outcome.valid is None else ("yes" if outcome.valid else
                                                             f"NO ({len(outcome.findings or [])})"))
        table.add_row(*cells)
    return table


def _convert_directory(source: Path, output: Path | None, report: Path | None, validate: bool,
                       context: ConversionContext, resolve: Resolver) -> int:
    from rich.console import Console
    from rich.progress import Progress

    if output is None:
        raise fail("a directory INPUT needs -o OUTPUT_DIRECTORY")
    with _writing(output):
        output.mkdir(parents=True, exist_ok=True)
    sources = sorted(p for p in source.rglob("*.json") if p.is_file())
    outcomes: list[Outcome] = []
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("converting", total=len(sources))
        for path in sources:
            outcome, xml = _convert_one(path, context, validate, resolve)
            if xml is not None:
                target = output / path.relative_to(source).with_suffix(".xml")
                with _writing(target):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(xml)
                outcome.target = target
            outcomes.append(outcome)
            progress.advance(task)
    Console().print(_summary_table(source, outcomes, validate))
    if report is not None:
        with _writing(report):
            report.write_text(json.dumps({str(o.source.relative_to(source)): o.report or {"error": o.error}
                                          for o in outcomes}, indent=2), encoding="utf-8")
    if any(o.error or o.valid is False for o in outcomes):
        return EXIT_FAILED
    return EXIT_OK


def _documents(paths: list[Path]) -> Iterator[Path]:
    """The files named, and under each directory named its ``*.xml`` files in order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.xml") if p.is_file())
        else:
            yield path


@app.command("validate")
def validate_command(
    documents: Annotated[list[Path], typer.Argument(help="C-CDA documents, or directories of them (*.xml)")],
) -> None:
    """Validate documents against the CDA schema (SDTC) and the C-CDA R2.1 schematron (phase errors).
    Exit 1 when any is invalid or unreadable."""
    from lxml import etree

    from xhuma.ccda.validate import validate_bytes

    valid = invalid = unreadable = 0
    for document in _documents(documents):
        try:
            result = validate_bytes(document.read_bytes())
        except (OSError, etree.XMLSyntaxError) as error:
            typer.echo(f"xhuma: {document}: unreadable ({type(error).__name__}: {str(error).splitlines()[0]})",
                       err=True)
            unreadable += 1
            continue
        status = "valid" if result.valid else "INVALID"
        typer.echo(f"{document}: {status} ({len(result.schema_errors)} schema errors, "
                   f"{len(result.schematron_errors)} schematron errors)")
        for finding in result.findings:
            typer.echo(f"  {finding}")
        valid, invalid = (valid + 1, invalid) if result.valid else (valid, invalid + 1)
    total = valid + invalid + unreadable
    if total == 0:
        raise fail("no documents: the directories given hold no *.xml file")
    if total > 1 or any(path.is_dir() for path in documents):  # one document's own line says it all
        typer.echo(f"{total} documents: {valid} valid, {invalid} invalid, {unreadable} unreadable")
    raise typer.Exit(EXIT_FAILED if invalid or unreadable else EXIT_OK)
