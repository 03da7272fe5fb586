"""``obsqc simulate`` through typer's CliRunner, on a local app (no other command needed)."""

from __future__ import annotations

import typer
from astropy.io import fits
from typer.testing import CliRunner

from obsqc.cli import simulate as sim_cli
from obsqc.sim import SIZE_PRESETS, read_labels


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # a group, so that "simulate" is a sub-command
        pass

    sim_cli.register(app)
    return app


def test_cli_choices_match_the_presets():
    assert set(sim_cli.SIZE_CHOICES) == set(SIZE_PRESETS)
    assert {s.value for s in sim_cli.Size} == set(SIZE_PRESETS)


def test_simulate_command(tmp_path):
    out = tmp_path / "night"
    r = CliRunner().invoke(_app(), ["simulate", "--n", "3", "--anomaly-fraction", "0.34", "--seed", "2",
                                    "--size", "tiny", "--compress", "--dtype", "int16", str(out)])
    assert r.exit_code == 0, r.output
    labels = read_labels(out)
    assert len(labels) == 3
    assert sum(lab.anomaly != "none" for lab in labels) == 1
    assert "exposures" in r.output and "labels" in r.output
    with fits.open(out / labels[0].file) as hdul:
        assert isinstance(hdul[1], fits.CompImageHDU)
        assert hdul[1].header["BITPIX"] == 16


def test_simulate_rejects_bad_options(tmp_path):
    runner = CliRunner()
    r = runner.invoke(_app(), ["simulate", "--size", "huge", str(tmp_path)])
    assert r.exit_code == 2
    r = runner.invoke(_app(), ["simulate", "--anomaly-fraction", "1.5", str(tmp_path)])
    assert r.exit_code == 2
    r = runner.invoke(_app(), ["simulate", "--n", "1", "--size", "tiny", "--band", "q", str(tmp_path)])
    assert r.exit_code == 2
