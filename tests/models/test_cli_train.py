"""`obsqc train` and `obsqc export` through the real command line (typer's runner), on tiny models."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from obsqc.cli import app
from obsqc.cli.train import parse_overrides
from obsqc.models.config import preset
from obsqc.models.onnx_scoring import AutoencoderScorer, GalaxyScorer
from obsqc.models.train import load_checkpoint

runner = CliRunner()

TINY_WGAN = ["--set", "size=16", "--set", "base_channels=2", "--set", "encoder_base_channels=2",
             "--set", "latent_dim=8", "--set", "batch_size=4", "--set", "refine_steps=3"]
TINY_AE = ["--set", "stamp_size=8", "--set", "hidden=8,4,8", "--set", "batch_size=8"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    np.save(d / "cutouts.npy", rng.random((40, 1, 16, 16), dtype=np.float32))
    np.save(d / "stamps.npy", rng.random((50, 8, 8), dtype=np.float32))
    return d


def test_train_wgan_resume_then_export(data_files, tmp_path):
    ckpt, models = tmp_path / "ckpt", tmp_path / "models"
    args = ["train", "wgan", "--out", str(ckpt), "--data", str(data_files / "cutouts.npy"), "--threads", "1",
            "--no-progress", "--heldout", "0.25", *TINY_WGAN]
    res = runner.invoke(app, [*args, "--steps", "2", "--encoder-steps", "0"])
    assert res.exit_code == 0, res.output
    assert "30 to train on, 10 held out" in res.output
    state = load_checkpoint(ckpt / "wgan.pt")
    assert (state["wgan_step"], state["encoder_step"]) == (2, 0)
    res = runner.invoke(app, [*args, "--steps", "3", "--encoder-steps", "2"])  # resumes at step 2
    assert res.exit_code == 0, res.output
    state = load_checkpoint(ckpt / "wgan.pt")
    assert (state["wgan_step"], state["encoder_step"]) == (3, 2)
    assert len(state["history"]["critic_loss"]) == 3 and state["meta"]["threads"] == 1
    assert "--steps 3" in state["meta"]["command"] and "--set size=16" in state["meta"]["command"]

    res = runner.invoke(app, ["train", "ae", "--out", str(ckpt), "--data", str(data_files / "stamps.npy"),
                              "--epochs", "2", "--threads", "1", "--no-progress", *TINY_AE])
    assert res.exit_code == 0, res.output
    assert "best validation MSE" in res.output

    res = runner.invoke(app, ["export", str(ckpt), "--out", str(models)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["models"] == ["autoencoder", "galaxy_scorer"] and summary["bytes"] > 0
    meta = json.loads((models / "model.json").read_text())
    assert meta["galaxy_scorer"]["n_reference"] == 10 and meta["autoencoder"]["n_reference"] == 5
    assert meta["export_command"].startswith("obsqc export")
    g = GalaxyScorer(models)
    assert set(g.reference) == {"s_gen", "s_disc", "s_anom"} and (g.channels, g.size) == (1, 16)
    assert AutoencoderScorer(models).mse(np.zeros((1, 8, 8), np.float32)).shape == (1,)


def test_no_resume_starts_over_and_a_changed_architecture_is_refused(data_files, tmp_path):
    args = ["train", "wgan", "--out", str(tmp_path), "--data", str(data_files / "cutouts.npy"), "--threads", "1",
            "--no-progress", "--steps", "1", "--encoder-steps", "0", *TINY_WGAN]
    assert runner.invoke(app, args).exit_code == 0
    res = runner.invoke(app, [*args, "--set", "kernel_size=5"])
    assert res.exit_code == 2 and "kernel_size" in res.output and "--no-resume" in res.output
    res = runner.invoke(app, [*args, "--set", "kernel_size=5", "--no-resume"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(tmp_path / "wgan.pt")["config"]["kernel_size"] == 5


@pytest.mark.parametrize("extra, message", [
    (["ae", "--data", "hubble"], "source stamps"),
    (["ae", "--steps", "3"], "--epochs"),
    (["wgan", "--epochs", "3"], "--steps"),
    (["wgan", "--data", "nowhere.npy"], "existing .npy"),
    (["wgan", "--set", "colour=3"], "KEY=VALUE"),
    (["wgan", "--set", "channels=2"], "channels"),
])
def test_train_rejects_bad_options(tmp_path, extra, message):
    res = runner.invoke(app, ["train", extra[0], "--out", str(tmp_path), *extra[1:]])
    assert res.exit_code == 2
    assert message in res.output


def test_wrong_array_shape_is_refused(data_files, tmp_path):
    res = runner.invoke(app, ["train", "wgan", "--out", str(tmp_path), "--data", str(data_files / "stamps.npy")])
    assert res.exit_code == 2 and "(N, 1, 64, 64)" in res.output


def test_export_of_an_empty_directory_fails(tmp_path):
    res = runner.invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "m")])
    assert res.exit_code == 1 and "obsqc train" in res.output


def test_parse_overrides_types():
    cfg = preset("wgan", "small")
    got = parse_overrides(cfg, ["base_channels=16", "refine_lr=0.05", "betas=0.0,0.99", "refine-steps=5"])
    assert got == {"base_channels": 16, "refine_lr": 0.05, "betas": (0.0, 0.99), "refine_steps": 5}
