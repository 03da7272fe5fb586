"""Exported models carry no trace of the machine that exported them (the default weights ship with obsqc)."""

from __future__ import annotations

from pathlib import Path

import pytest

import obsqc

torch = pytest.importorskip("torch")

SOURCE_ROOT = str(Path(obsqc.__file__).resolve().parent.parent).encode()


def test_an_export_has_no_stack_traces_or_local_paths(tmp_path):
    from obsqc.models.autoencoder import DenseAutoencoder
    from obsqc.models.config import preset
    from obsqc.models.export import export_autoencoder

    path = export_autoencoder(DenseAutoencoder(preset("ae", "small")), tmp_path / "autoencoder.onnx")
    data = path.read_bytes()
    assert b"pkg.torch.onnx.stack_trace" not in data and SOURCE_ROOT not in data


@pytest.mark.parametrize("name", ["autoencoder.onnx", "galaxy_scorer.onnx"])
def test_the_shipped_weights_have_no_stack_traces(name):
    from obsqc.models.onnx_scoring import default_model_dir

    data = (default_model_dir() / name).read_bytes()
    assert b"stack_trace" not in data and b"site-packages" not in data
