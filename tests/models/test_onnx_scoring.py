"""Scoring through onnxruntime without torch (obsqc.models.onnx_scoring), on small hand-built ONNX graphs
with the exported models' interface (the real exports are checked in test_train_export.py)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from obsqc.models import onnx_scoring
from obsqc.models.noise_scores import generator_score
from obsqc.models.onnx_scoring import (
    AutoencoderScorer,
    GalaxyScorer,
    ModelArtifactError,
    available_providers,
    default_model_dir,
    to_sigma,
)

S = 8


def _save(graph, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _consts():
    return [helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
            helper.make_tensor("w_gen", TensorProto.FLOAT, [], [0.7]),
            helper.make_tensor("w_disc", TensorProto.FLOAT, [], [0.3]),
            helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
            helper.make_tensor("axes3", TensorProto.INT64, [3], [1, 2, 3]),
            helper.make_tensor("axes2", TensorProto.INT64, [2], [1, 2])]


def galaxy_graph(channels: int = 1):
    """reconstruction = x / 2; s_gen = sum |x - rec|; s_disc = 2 s_gen; s_anom = 0.7 s_gen + 0.3 s_disc."""
    nodes = [helper.make_node("Mul", ["cutouts", "half"], ["reconstruction"]),
             helper.make_node("Sub", ["cutouts", "reconstruction"], ["r"]),
             helper.make_node("Abs", ["r"], ["ar"]),
             helper.make_node("ReduceSum", ["ar", "axes3"], ["s_gen"], keepdims=0),
             helper.make_node("Mul", ["s_gen", "two"], ["s_disc"]),
             helper.make_node("Mul", ["s_gen", "w_gen"], ["a"]),
             helper.make_node("Mul", ["s_disc", "w_disc"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["s_anom"])]
    shape = ["batch", channels, S, S]
    return helper.make_graph(
        nodes, "galaxy", [helper.make_tensor_value_info("cutouts", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch"]) for n in ("s_gen", "s_disc", "s_anom")]
        + [helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT, shape)], initializer=_consts())


def autoencoder_graph():
    """reconstruction = x / 2; mse = mean((rec - x)^2) over the stamp (eq. 9)."""
    nodes = [helper.make_node("Mul", ["stamps", "half"], ["reconstruction"]),
             helper.make_node("Sub", ["reconstruction", "stamps"], ["d"]),
             helper.make_node("Mul", ["d", "d"], ["d2"]),
             helper.make_node("ReduceMean", ["d2", "axes2"], ["mse"], keepdims=0)]
    return helper.make_graph(
        nodes, "ae", [helper.make_tensor_value_info("stamps", TensorProto.FLOAT, ["batch", S, S])],
        [helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT, ["batch", S, S]),
         helper.make_tensor_value_info("mse", TensorProto.FLOAT, ["batch"])], initializer=_consts())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("onnx_models")
    _save(galaxy_graph(), d / "galaxy_scorer.onnx")
    _save(autoencoder_graph(), d / "autoencoder.onnx")
    meta = {"galaxy_scorer": {"reference": {"s_gen": [10.0, 2.0], "s_disc": [20.0, 4.0], "s_anom": [13.0, 2.6]}},
            "autoencoder": {"reference": {"mse": [0.05, 0.01]}}}
    (d / "model.json").write_text(json.dumps(meta))
    return d


def test_scoring_never_imports_torch(model_dir):
    code = f"""
import sys
import numpy as np
from obsqc.models.onnx_scoring import AutoencoderScorer, GalaxyScorer
g = GalaxyScorer({str(model_dir)!r}).score(np.ones((3, 1, {S}, {S}), np.float32))
m = AutoencoderScorer({str(model_dir)!r}).mse(np.ones((2, {S}, {S}), np.float32))
assert g.s_anom.shape == (3,) and m.shape == (2,)
assert 'torch' not in sys.modules, 'torch was imported'
print('ok')
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_galaxy_scores_batches_and_reference(model_dir):
    x = np.random.default_rng(0).random((37, 1, S, S), dtype=np.float32)
    scorer = GalaxyScorer(model_dir, threads=1)
    assert (scorer.channels, scorer.size) == (1, S)
    r = scorer.score(x, batch_size=10)
    l1 = np.abs(x / 2).sum(axis=(1, 2, 3))
    # The graph's own outputs: the paper's L1 s_gen and L_tot, and s_disc as it is.
    np.testing.assert_allclose(r.l1_gen, l1, rtol=1e-6)
    np.testing.assert_allclose(r.l_tot, 0.7 * l1 + 0.6 * l1, rtol=1e-6)
    np.testing.assert_allclose(r.s_disc, 2 * l1, rtol=1e-6)
    # obsqc's s_gen: ln of the reduced chi-square in noise units, from the cutouts and the reconstruction.
    np.testing.assert_allclose(r.s_gen, generator_score(x, x / 2), rtol=1e-6)
    # s_anom: 0.7 and 0.3 of s_gen and s_disc in sigma units of model.json's reference.
    np.testing.assert_allclose(r.s_anom, 0.7 * (r.s_gen - 10.0) / 2.0 + 0.3 * (r.s_disc - 20.0) / 4.0, rtol=1e-6)
    assert r.s_gen.dtype == np.float64 and r.reconstruction.dtype == np.float32
    np.testing.assert_allclose(r.reconstruction, x / 2)
    one = scorer.score(x, batch_size=64)
    np.testing.assert_array_equal(one.s_anom, r.s_anom)
    single = scorer.score(x[0])  # (C, S, S) is one cutout
    assert single.s_anom.shape == (1,) and len(single) == 1
    assert scorer.reference == {"s_gen": (10.0, 2.0), "s_disc": (20.0, 4.0), "s_anom": (13.0, 2.6)}
    sig = r.sigma(scorer.reference)
    np.testing.assert_allclose(sig["s_disc"], (r.s_disc - 20.0) / 4.0)


def test_galaxy_scorer_empty_and_bad_input(model_dir):
    scorer = GalaxyScorer(model_dir)
    empty = scorer.score(np.zeros((0, 1, S, S), np.float32))
    assert empty.s_anom.shape == (0,) and empty.reconstruction.shape == (0, 1, S, S)
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        scorer.score(np.zeros((2, 3, S, S), np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        scorer.score(np.zeros((2, 1, S, S), np.float32), batch_size=0)


def test_autoencoder_scorer(model_dir):
    x = np.random.default_rng(1).random((300, S, S), dtype=np.float32)
    for where in (model_dir, model_dir / "autoencoder.onnx"):
        ae = AutoencoderScorer(where)
        assert ae.stamp_size == S
        mse = ae.mse(x, batch_size=128)
        np.testing.assert_allclose(mse, (x.astype(np.float64) ** 2).mean(axis=(1, 2)) / 4, rtol=1e-5)
        assert mse.dtype == np.float64
    np.testing.assert_allclose(ae.reconstruct(x[:3]), x[:3] / 2)
    assert ae.mse(np.zeros((0, S, S), np.float32)).shape == (0,)
    assert AutoencoderScorer(model_dir).reference == {"mse": (0.05, 0.01)}
    with pytest.raises(ValueError, match="stamps have shape"):
        ae.mse(np.zeros((2, S + 1, S + 1), np.float32))


def test_missing_or_broken_artifacts_say_what_to_do(tmp_path, model_dir):
    with pytest.raises(ModelArtifactError, match="obsqc export"):
        GalaxyScorer(tmp_path)
    (tmp_path / "galaxy_scorer.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelArtifactError, match="cannot load"):
        GalaxyScorer(tmp_path)
    broken = tmp_path / "b"
    broken.mkdir()
    (broken / "autoencoder.onnx").write_bytes((model_dir / "autoencoder.onnx").read_bytes())
    (broken / "model.json").write_text("{not json")
    with pytest.raises(ModelArtifactError, match="model.json"):
        AutoencoderScorer(broken)
    with pytest.raises(ModelArtifactError, match="square stamps"):
        AutoencoderScorer(model_dir / "galaxy_scorer.onnx")


def test_providers_cuda_first_when_present(monkeypatch):
    assert available_providers()[-1] == "CPUExecutionProvider"
    monkeypatch.setattr(onnx_scoring.ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider", "CUDAExecutionProvider"])
    assert available_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_default_model_dir_is_package_data():
    d = default_model_dir()
    assert d.name == "weights" and d.parent == Path(onnx_scoring.__file__).resolve().parent


def test_to_sigma():
    np.testing.assert_allclose(to_sigma(np.array([1.0, 3.0]), (1.0, 2.0)), [0.0, 1.0])
    assert np.isnan(to_sigma(np.array([1.0]), (1.0, 0.0))).all()
