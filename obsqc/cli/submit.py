"""``obsqc submit``: the pipeline's client from a shell: post exposures to the API, optionally wait.

Prints one line per file, ``<id> <status> <url>`` (tab-separated; ``--json``: one JSON object), and
with ``--wait`` one more per exposure once it has a verdict, ``<id> <verdict> <flags>``. Exits 1
when a submission failed, a verdict is ``rejected`` or ``error``, or ``--wait`` timed out; 2 on usage
errors (no token).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import typer

FAILED_VERDICTS = ("rejected", "error")
"""Verdicts that make ``obsqc submit --wait`` exit nonzero."""


def _emit(as_json: bool, record: dict, fields: tuple[str, ...]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(record) + "\n")
    else:
        sys.stdout.write("\t".join("-" if record.get(f) in (None, "", []) else
                                   ",".join(record[f]) if isinstance(record[f], list) else str(record[f])
                                   for f in fields) + "\n")
    sys.stdout.flush()


def _error_text(response) -> str:
    try:
        body = response.json()
        return f"{body.get('error', response.status_code)}: {body.get('detail', '')}"
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"


def _post(client, file: Path, *, upload: bool, exposure_id: str | None):
    if not upload:
        body = {"path": os.path.abspath(file)} | ({"exposure_id": exposure_id} if exposure_id else {})
        return client.post("/v1/exposures", json=body)
    with open(file, "rb") as fh:
        return client.post("/v1/exposures", files={"file": (file.name, fh, "application/fits")},
                           data={"exposure_id": exposure_id} if exposure_id else None)


def submit(
    files: list[Path] = typer.Argument(..., help="FITS exposures to submit."),
    wait: bool = typer.Option(False, "--wait", help="Poll until every exposure has a verdict, and print it."),
    timeout: float = typer.Option(600.0, "--timeout", min=0, help="With --wait: give up after this many seconds."),
    url: str = typer.Option("http://127.0.0.1:8000", "--url", help="Base URL of the obsqc API."),
    token: str | None = typer.Option(None, "--token", help="API token (default: OBSQC_API_TOKEN)."),
    upload: bool = typer.Option(
        False, "--upload/--path",
        help="--path (default) sends the absolute path, which must lie under the server's OBSQC_DATA_ROOTS; "
             "--upload streams the file to the server."),
    exposure_id: str | None = typer.Option(
        None, "--exposure-id", help="Id for a file whose headers carry none (EXPNUM/EXPID/OBSID); one file only."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per line."),
) -> None:
    """Submit exposures to the obsqc API (POST /v1/exposures) and optionally wait for their verdicts."""
    import httpx

    from obsqc.service.settings import Settings

    token = token or Settings().api_token
    if not token:
        typer.echo("error: no API token: pass --token or set OBSQC_API_TOKEN", err=True)
        raise typer.Exit(2)
    if exposure_id and len(files) > 1:
        typer.echo("error: --exposure-id names one exposure; submit one file with it", err=True)
        raise typer.Exit(2)
    failed = False
    pending: dict[str, str] = {}  # exposure id -> status URL
    with httpx.Client(base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {token}"},
                      timeout=httpx.Timeout(120.0, connect=10.0)) as client:
        for file in files:
            try:
                response = _post(client, file, upload=upload, exposure_id=exposure_id)
            except OSError as exc:  # the file could not be read (--upload)
                typer.echo(f"{file}: {exc}", err=True)
                failed = True
                continue
            except httpx.HTTPError as exc:
                typer.echo(f"{file}: cannot reach {url}: {exc}", err=True)
                failed = True
                continue
            if response.status_code not in (200, 202):
                typer.echo(f"{file}: {_error_text(response)}", err=True)
                failed = True
                continue
            body = response.json()
            _emit(as_json, {"file": str(file), "id": body["id"], "status": body["status"], "url": body["url"]},
                  ("id", "status", "url"))
            pending[body["id"]] = body["url"]
        if wait:
            failed |= _wait(client, pending, timeout, as_json)
    raise typer.Exit(1 if failed else 0)


def _wait(client, pending: dict[str, str], timeout: float, as_json: bool) -> bool:
    """Poll until every exposure in ``pending`` has a verdict; print each; True when any failed."""
    import httpx

    failed = False
    deadline = time.monotonic() + timeout
    delay = 0.2
    while pending:
        for exposure_id, status_url in list(pending.items()):
            with contextlib.suppress(httpx.TransportError):
                response = client.get(status_url)
                if response.status_code != 200:
                    typer.echo(f"{exposure_id}: {_error_text(response)}", err=True)
                    failed = True
                    del pending[exposure_id]
                    continue
                e = response.json()
                if e.get("verdict") is None:
                    continue
                flags = [f.get("name", "?") if isinstance(f, dict) else str(f) for f in e.get("flags") or ()]
                _emit(as_json, {"id": exposure_id, "verdict": e["verdict"], "flags": flags, "reason": e.get("reason"),
                                "url": status_url}, ("id", "verdict", "flags"))
                if e["verdict"] in FAILED_VERDICTS:
                    typer.echo(f"{exposure_id}: {e['verdict']}: {e.get('reason') or 'no reason recorded'}", err=True)
                    failed = True
                del pending[exposure_id]
        if not pending:
            break
        if time.monotonic() >= deadline:
            typer.echo(f"timed out after {timeout:g} s waiting for: {', '.join(pending)}", err=True)
            return True
        time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
        delay = min(delay * 1.5, 2.0)
    return failed


def register(app: typer.Typer) -> None:
    """Add ``submit`` to the CLI."""
    app.command("submit")(submit)
