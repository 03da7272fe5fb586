"""Scoring with the exported models through onnxruntime only (numpy, never torch).

This is what the service loads, one instance per worker process:

* :class:`AutoencoderScorer`: ``autoencoder.onnx``: source stamps (N, 64, 64) -> per-stamp
  reconstruction MSE (Alonso, Zhang & Li, eq. 9) and the reconstructions.
* :class:`GalaxyScorer`: ``galaxy_scorer.onnx``: cutouts (N, C, S, S) on the fixed asinh scale ->
  the reconstruction G(z) of Storey-Fisher et al. (2021) section 3.2 (the encoder and the 10-step
  latent refinement run inside the graph) and the scores s_gen (residual in noise units,
  :mod:`obsqc.models.noise_scores`), s_disc (critic features, eq. 6) and s_anom. ``reference`` gives the mean and standard deviation
  of each score on held-out normal images (written at export), to put scores in sigma units
  (section 4.1: s_disc > 3 sigma is the high-anomaly sample) until the survey's running
  distribution takes over.

Providers: CUDA first when onnxruntime offers it, else CPU (:func:`available_providers`). ``threads``
sets onnxruntime's intra-op threads (1 = one core per worker).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from obsqc.models.noise_scores import MODEL_ERROR, anomaly_score, generator_score

__all__ = [
    "AUTOENCODER_FILE",
    "AutoencoderScorer",
    "GALAXY_SCORER_FILE",
    "GalaxyScorer",
    "GalaxyScores",
    "METADATA_FILE",
    "ModelArtifactError",
    "SCORE_NAMES",
    "available_providers",
    "default_model_dir",
    "read_metadata",
    "to_sigma",
]

AUTOENCODER_FILE = "autoencoder.onnx"
"""File name of the exported autoencoder inside a model directory."""
GALAXY_SCORER_FILE = "galaxy_scorer.onnx"
"""File name of the exported galaxy scorer (encoder + refinement + scores) inside a model directory."""
METADATA_FILE = "model.json"
"""Metadata next to the ONNX files: configs, training record, score references, versions."""
SCORE_NAMES: tuple[str, ...] = ("s_gen", "s_disc", "s_anom")
"""The galaxy scores of Storey-Fisher et al. (2021) section 3.2, in output order."""


class ModelArtifactError(RuntimeError):
    """A model file or directory that is missing, unreadable or does not fit the input."""


def available_providers() -> list[str]:
    """onnxruntime execution providers to use: ``CUDAExecutionProvider`` first when present, then CPU."""
    have = ort.get_available_providers()
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in have else []) + ["CPUExecutionProvider"]


def default_model_dir() -> Path:
    """Directory of the default weights shipped with the package (``obsqc/models/weights/``)."""
    return Path(__file__).resolve().parent / "weights"


def read_metadata(model_dir: str | os.PathLike) -> dict[str, Any]:
    """``model.json`` of a model directory, or ``{}`` when there is none."""
    path = Path(model_dir) / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelArtifactError(f"cannot read {path}: {exc}; re-export the models with `obsqc export`") from exc


def _session(path: Path, threads: int, providers: list[str] | None) -> ort.InferenceSession:
    if not path.is_file():
        raise ModelArtifactError(f"no model at {path}; export one with `obsqc export CHECKPOINT_DIR --out DIR`")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers or available_providers())
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types
        raise ModelArtifactError(f"cannot load {path}: {exc}") from exc


def _static_dims(session: ort.InferenceSession) -> list[int | None]:
    return [d if isinstance(d, int) else None for d in session.get_inputs()[0].shape]


def _reference_pairs(entry: dict[str, Any] | None) -> dict[str, tuple[float, float]]:
    ref = (entry or {}).get("reference") or {}
    out = {}
    for name, value in ref.items():
        if isinstance(value, (list, tuple)) and len(value) == 2:
            out[name] = (float(value[0]), float(value[1]))
    return out


def to_sigma(values: np.ndarray, reference: tuple[float, float]) -> np.ndarray:
    """(value - mean) / std in sigma units of a reference (mean, std) (Storey-Fisher et al. section 4.1)."""
    mean, std = reference
    return (np.asarray(values, dtype=np.float64) - mean) / (std if std > 0 else np.nan)


class AutoencoderScorer:
    """The source-stamp autoencoder (Alonso, Zhang & Li section 4) through onnxruntime.

    ``path_or_dir``: ``autoencoder.onnx`` or a directory holding it (and ``model.json``).
    """

    def __init__(self, path_or_dir: str | os.PathLike, *, threads: int = 1, providers: list[str] | None = None):
        p = Path(path_or_dir)
        self.path = p / AUTOENCODER_FILE if p.is_dir() else p
        self.metadata = read_metadata(self.path.parent).get("autoencoder", {})
        self.session = _session(self.path, threads, providers)
        self._input = self.session.get_inputs()[0].name
        dims = _static_dims(self.session)
        if len(dims) != 3 or dims[1] is None or dims[1] != dims[2]:
            raise ModelArtifactError(f"{self.path} does not take square stamps (N, S, S): input {dims}")
        self.stamp_size: int = int(dims[1])

    @property
    def reference(self) -> dict[str, tuple[float, float]]:
        """{"mse": (mean, std)} of the per-stamp MSE on held-out normal stamps, when exported with one."""
        return _reference_pairs(self.metadata)

    def _run(self, stamps: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(stamps, dtype=np.float32)
        s = self.stamp_size
        if x.ndim != 3 or x.shape[1:] != (s, s):
            raise ValueError(f"stamps have shape {x.shape}; this autoencoder takes (N, {s}, {s})")
        if len(x) == 0:
            return np.zeros((0, s, s), np.float32), np.zeros(0, np.float64)
        recs, mses = [], []
        for i in range(0, len(x), batch_size):
            rec, mse = self.session.run(None, {self._input: np.ascontiguousarray(x[i:i + batch_size])})
            recs.append(rec)
            mses.append(mse)
        return np.concatenate(recs), np.concatenate(mses).astype(np.float64)

    def mse(self, stamps: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
        """Per-stamp reconstruction MSE of eq. (9): stamps (N, S, S) -> float64 (N,)."""
        return self._run(stamps, batch_size)[1]

    def reconstruct(self, stamps: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
        """Reconstructions, float32 (N, S, S)."""
        return self._run(stamps, batch_size)[0]


@dataclass(frozen=True)
class GalaxyScores:
    """Scores of N cutouts, float64 (N,) each, and the reconstructions G(z) (N, C, S, S).

    ``s_gen``: ln of the reduced chi-square of the residual in noise units
    (:func:`obsqc.models.noise_scores.generator_score`); ``s_disc``: the critic-feature L1 of 003 eq. 6;
    ``s_anom``: their weighted sum in sigma units (:func:`obsqc.models.noise_scores.anomaly_score`).
    ``l1_gen`` and ``l_tot`` are the paper's own s_gen (eq. 5, L1 of the scaled images) and
    s_anom (L_tot after refinement), as the ONNX graph computes them, kept for comparison.
    """

    s_gen: np.ndarray
    s_disc: np.ndarray
    s_anom: np.ndarray
    reconstruction: np.ndarray
    l1_gen: np.ndarray | None = None
    l_tot: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.s_anom)

    def sigma(self, reference: dict[str, tuple[float, float]]) -> dict[str, np.ndarray]:
        """Each score in sigma units of a reference {name: (mean, std)} (section 4.1)."""
        return {name: to_sigma(getattr(self, name), reference[name]) for name in SCORE_NAMES if name in reference}


class GalaxyScorer:
    """The WGAN galaxy scorer (encoder, 10-step latent refinement, scores) through onnxruntime.

    ``model_dir``: a directory holding ``galaxy_scorer.onnx`` and ``model.json``.
    """

    def __init__(self, model_dir: str | os.PathLike, *, threads: int = 1, providers: list[str] | None = None):
        d = Path(model_dir)
        self.path = d / GALAXY_SCORER_FILE if d.is_dir() else d
        self.metadata = read_metadata(self.path.parent).get("galaxy_scorer", {})
        self.session = _session(self.path, threads, providers)
        self._input = self.session.get_inputs()[0].name
        self._outputs = [o.name for o in self.session.get_outputs()]
        dims = _static_dims(self.session)
        if len(dims) != 4 or None in dims[1:] or dims[2] != dims[3]:
            raise ModelArtifactError(f"{self.path} does not take cutouts (N, C, S, S): input {dims}")
        self.channels: int = int(dims[1])
        self.size: int = int(dims[2])

    @property
    def reference(self) -> dict[str, tuple[float, float]]:
        """{score name: (mean, std)} on held-out normal images, from the exported metadata."""
        return _reference_pairs(self.metadata)

    @property
    def model_error(self) -> float:
        """The fractional model error of s_gen (``model.json``, else :data:`noise_scores.MODEL_ERROR`)."""
        return float((self.metadata.get("noise_score") or {}).get("model_error", MODEL_ERROR))

    @property
    def lambda_anom(self) -> float:
        """lambda of s_anom (003 section 3.2: 0.3), from the exported config."""
        return float((self.metadata.get("config") or {}).get("lambda_anom", 0.3))

    def score(self, cutouts: np.ndarray, batch_size: int = 64) -> GalaxyScores:
        """Score cutouts (N, C, S, S) in [0, 1] (float32; (C, S, S) for one); N = 0 gives empty arrays."""
        x = np.asarray(cutouts, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        shape = (self.channels, self.size, self.size)
        if x.ndim != 4 or x.shape[1:] != shape:
            raise ValueError(f"cutouts have shape {x.shape}; this scorer takes (N, {', '.join(map(str, shape))})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(x) == 0:
            e = np.zeros(0, np.float64)
            return GalaxyScores(e, e.copy(), e.copy(), np.zeros((0, *shape), np.float32), e.copy(), e.copy())
        parts: list[list[np.ndarray]] = [[], [], [], []]
        for i in range(0, len(x), batch_size):
            out = dict(zip(self._outputs, self.session.run(None, {self._input: np.ascontiguousarray(x[i:i + batch_size])})))
            for k, name in enumerate((*SCORE_NAMES, "reconstruction")):
                parts[k].append(out[name])
        l1_gen, s_disc, l_tot, rec = (np.concatenate(p) for p in parts)
        s_gen = generator_score(x, rec, model_error=self.model_error)
        s_disc = s_disc.astype(np.float64)
        s_anom = anomaly_score(s_gen, s_disc, lam=self.lambda_anom, reference=self.reference)
        return GalaxyScores(s_gen, s_disc, s_anom, rec, l1_gen.astype(np.float64), l_tot.astype(np.float64))
