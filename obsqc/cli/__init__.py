"""The ``obsqc`` command line. Each sub-command lives in its own module of this package.

Modules are imported lazily inside the commands so that ``obsqc --help`` stays fast.
"""

from __future__ import annotations

import logging

import typer

from obsqc.cli import db as _db
from obsqc.cli import calibrate as _calibrate
from obsqc.cli import demo as _demo
from obsqc.cli import export_models as _export_models
from obsqc.cli import rank as _rank
from obsqc.cli import serve as _serve
from obsqc.cli import simulate as _simulate
from obsqc.cli import submit as _submit
from obsqc.cli import train as _train
from obsqc.cli import up as _up
from obsqc.cli import worker as _worker

app = typer.Typer(
    name="obsqc",
    help="Real-time quality control for observatory exposures (the Entropy Method and friends).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for _module in (_simulate, _rank, _demo, _worker, _serve, _submit, _db, _calibrate, _up, _train, _export_models):
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
