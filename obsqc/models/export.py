"""ONNX export of the trained models, checked against torch, with the metadata the service needs.

An exported model directory holds (names in :mod:`obsqc.models.onnx_scoring`):

* ``autoencoder.onnx``: stamps (N, 64, 64) -> ``reconstruction`` (N, 64, 64), ``mse`` (N,)
  (Alonso, Zhang & Li, eq. 9).
* ``galaxy_scorer.onnx``: cutouts (N, C, S, S) -> ``s_gen``, ``s_disc``, ``s_anom`` (N,),
  ``reconstruction`` (N, C, S, S): the encoder, the unrolled latent refinement with its hand-written
  gradient (:func:`obsqc.models.refine.refine`) and the scores of Storey-Fisher et al. (2021) section 3.2.
* ``model.json``: for each model its config, the training record (command, dates, training time,
  data), the reference mean and standard deviation of each score over held-out normal inputs
  (computed here through onnxruntime, the path the service uses; section 4.1 sigma units), the
  input geometry, and the library versions.

Both graphs have a dynamic batch axis; the exporter is ``torch.onnx.export(dynamo=True)``; every
file is checked with ``onnx.checker`` and run once through onnxruntime against torch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from obsqc.models.autoencoder import AutoencoderExport, DenseAutoencoder
from obsqc.models.config import WGANConfig
from obsqc.models.onnx_scoring import (
    AUTOENCODER_FILE,
    GALAXY_SCORER_FILE,
    METADATA_FILE,
    SCORE_NAMES,
    AutoencoderScorer,
    GalaxyScorer,
    read_metadata,
)
from obsqc.models.noise_scores import MODEL_ERROR
from obsqc.models.preprocess import REFERENCE_NOISE, SOFTENING_Q, STRETCH
from obsqc.models.refine import RefinementScorer
from obsqc.models.train import AUTOENCODER_CHECKPOINT, WGAN_CHECKPOINT, load_checkpoint, rebuild_autoencoder, \
    rebuild_wgan
from obsqc.models.wgan import Critic, Encoder, Generator

__all__ = [
    "ExportError",
    "OPSET",
    "export_autoencoder",
    "export_galaxy_scorer",
    "export_models",
    "export_onnx",
    "reference_stats",
]

logger = logging.getLogger(__name__)

OPSET = 18
"""ONNX opset of the exported graphs (onnxruntime >= 1.16 runs it)."""


class ExportError(RuntimeError):
    """An export that failed, or whose ONNX outputs do not match torch."""


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's progress prints, deprecation warnings and 'torchvision is not installed' logs."""
    names = ("torch.onnx", "torch.onnx._internal.exporter._registration", "torch.export")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # the exporter's own deprecation chatter, not ours to fix
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def strip_source_info(path: str | os.PathLike) -> None:
    """Remove what the exporter records about the machine that exported a model (stack traces with its
    absolute source paths, in node metadata and doc strings): the weights ship with obsqc, the traces must
    not. The computation is untouched."""
    import onnx

    model = onnx.load(str(path))

    def clean(graph) -> None:
        for node in graph.node:
            node.doc_string = ""
            keep = [p for p in node.metadata_props if not p.key.startswith("pkg.torch")]
            del node.metadata_props[:]
            node.metadata_props.extend(keep)
            for attribute in node.attribute:
                if attribute.g is not None and attribute.HasField("g"):
                    clean(attribute.g)
                for sub in attribute.graphs:
                    clean(sub)

    clean(model.graph)
    for function in model.functions:
        for node in function.node:
            node.doc_string = ""
            keep = [p for p in node.metadata_props if not p.key.startswith("pkg.torch")]
            del node.metadata_props[:]
            node.metadata_props.extend(keep)
    model.graph.doc_string = ""
    onnx.save(model, str(path))


def export_onnx(module: nn.Module, example: torch.Tensor, path: str | os.PathLike, *,
                input_name: str, output_names: list[str]) -> Path:
    """Export ``module(example)`` to ``path`` with a dynamic batch axis; check the file with onnx.checker."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    batch = torch.export.Dim("batch", min=1)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with torch.no_grad(), _quiet_exporter():
            torch.onnx.export(module, (example,), str(tmp), dynamo=True, external_data=False, opset_version=OPSET,
                              input_names=[input_name], output_names=output_names,
                              dynamic_shapes=({0: batch},), verbose=False)
        strip_source_info(tmp)
        onnx.checker.check_model(str(tmp))
        os.replace(tmp, path)
    except Exception as exc:  # noqa: BLE001 - torch.export raises many types; all mean the same here
        tmp.unlink(missing_ok=True)
        raise ExportError(f"ONNX export to {path} failed: {exc}") from exc
    return path


def _ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def export_autoencoder(model: DenseAutoencoder, path: str | os.PathLike, *, check: bool = True) -> Path:
    """``autoencoder.onnx``: stamps (N, S, S) -> (reconstruction, mse); checked against torch (1e-4)."""
    s = model.config.stamp_size
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(4, s, s, generator=gen)
    wrapped = AutoencoderExport(model).eval()
    path = export_onnx(wrapped, example, path, input_name="stamps", output_names=["reconstruction", "mse"])
    if check:
        with torch.no_grad():
            want = [t.numpy() for t in wrapped(example)]
        got = _ort_session(path).run(None, {"stamps": example.numpy()})
        for name, a, b in zip(("reconstruction", "mse"), want, got):
            if not np.allclose(a, b, rtol=1e-4, atol=1e-5):
                raise ExportError(f"{path}: onnxruntime {name} differs from torch by {np.abs(a - b).max():.3g}")
    return path


def export_galaxy_scorer(generator: Generator, critic: Critic, encoder: Encoder, config: WGANConfig,
                         path: str | os.PathLike, *, check: bool = True) -> Path:
    """``galaxy_scorer.onnx``: cutouts -> s_gen, s_disc, s_anom, reconstruction (refinement inside).

    The check runs a fixed batch through onnxruntime and through the same torch graph: the median
    relative difference of s_anom must be below 1e-4 (single images may differ more where an Adam
    step of the refinement divides two nearly-zero numbers: section 3.2 ranks, the parity test uses
    Spearman's rho).
    """
    scorer = RefinementScorer(generator, critic, encoder, config).eval()
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(4, config.channels, config.size, config.size, generator=gen)
    path = export_onnx(scorer, example, path, input_name="cutouts", output_names=[*SCORE_NAMES, "reconstruction"])
    if check:
        with torch.no_grad():
            want = scorer(example)[2].numpy()
        got = _ort_session(path).run(None, {"cutouts": example.numpy()})[2]
        rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-12)
        if not np.isfinite(got).all() or np.median(rel) > 1e-4:
            raise ExportError(f"{path}: onnxruntime s_anom differs from torch (median relative {np.median(rel):.3g})")
    return path


def reference_stats(values: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """{name: [mean, std]} of each score over a held-out normal set (std with ddof=1 when n > 1)."""
    out = {}
    for name, v in values.items():
        v = np.asarray(v, dtype=np.float64)
        v = v[np.isfinite(v)]
        if len(v) == 0:
            continue
        out[name] = [float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0]
    return out


def _versions() -> dict[str, str]:
    from importlib import metadata

    import onnx
    import onnxruntime

    try:
        obsqc_version = metadata.version("obsqc")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        obsqc_version = "unknown"
    return {"obsqc": obsqc_version, "torch": str(torch.__version__), "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "opset": str(OPSET)}


def _training_record(state: dict[str, Any]) -> dict[str, Any]:
    meta = dict(state.get("meta", {}))
    meta.pop("versions", None)
    record = {**meta, "training_versions": state.get("meta", {}).get("versions", {})}
    if state["kind"] == "ae":
        record.update(epochs_run=state["epoch"], best_epoch=state["best"]["epoch"],
                      best_val_loss=state["best"]["val_loss"])
    else:
        record.update(wgan_steps_run=state["wgan_step"], encoder_steps_run=state["encoder_step"])
    return record


def export_models(checkpoint_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                  heldout_stamps: np.ndarray | None = None, heldout_images: np.ndarray | None = None,
                  threads: int = 1, command: str | None = None) -> dict[str, Any]:
    """Export the checkpoints found in ``checkpoint_dir`` to ``out_dir`` and write ``model.json``.

    ``heldout_stamps`` (N, 64, 64) and ``heldout_images`` (N, C, S, S) are normal inputs never
    trained on; each score's reference mean/std is computed over them with the exported ONNX model.
    Without them the reference is left empty (the service then waits for its running distribution).
    An existing ``model.json`` in ``out_dir`` keeps its entry for a model not exported now, if that
    model's ONNX file is still there. Returns the metadata written.
    """
    src, out = Path(checkpoint_dir), Path(out_dir)
    have_ae, have_wgan = (src / AUTOENCODER_CHECKPOINT).is_file(), (src / WGAN_CHECKPOINT).is_file()
    if not (have_ae or have_wgan):
        raise ExportError(f"no {AUTOENCODER_CHECKPOINT} or {WGAN_CHECKPOINT} in {src}; train with `obsqc train`")
    out.mkdir(parents=True, exist_ok=True)
    previous = read_metadata(out)
    meta: dict[str, Any] = {"format": 1, "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                            "export_command": command, "versions": _versions()}
    for key, fname in (("autoencoder", AUTOENCODER_FILE), ("galaxy_scorer", GALAXY_SCORER_FILE)):
        if key in previous and (out / fname).is_file():
            meta[key] = previous[key]

    if have_ae:
        state = load_checkpoint(src, "ae")
        model = rebuild_autoencoder(state)
        export_autoencoder(model, out / AUTOENCODER_FILE)
        entry = {"file": AUTOENCODER_FILE, "config": state["config"], "stamp_size": model.config.stamp_size,
                 "training": _training_record(state), "reference": {}, "n_reference": 0}
        if heldout_stamps is not None and len(heldout_stamps):
            mse = AutoencoderScorer(out / AUTOENCODER_FILE, threads=threads).mse(heldout_stamps)
            entry.update(reference=reference_stats({"mse": mse}), n_reference=len(mse))
        meta["autoencoder"] = entry
        logger.info("exported the autoencoder to %s", out / AUTOENCODER_FILE)

    if have_wgan:
        state = load_checkpoint(src, "wgan")
        G, C, E, config = rebuild_wgan(state)
        export_galaxy_scorer(G, C, E, config, out / GALAXY_SCORER_FILE)
        entry = {"file": GALAXY_SCORER_FILE, "config": state["config"], "channels": config.channels,
                 "size": config.size, "training": _training_record(state), "reference": {}, "n_reference": 0,
                 "input_scale": {"kind": "asinh", "per_image": False, "stretch": STRETCH, "Q": SOFTENING_Q,
                                 "reference_noise": REFERENCE_NOISE},
                 "noise_score": {"model_error": MODEL_ERROR}}
        meta["galaxy_scorer"] = entry
        if heldout_images is not None and len(heldout_images):
            # Two passes: s_anom standardises s_gen and s_disc by their reference (noise_scores.anomaly_score),
            # so those two come first, then s_anom's own reference with them in place.
            _write_metadata(out, meta)
            scores = GalaxyScorer(out, threads=threads).score(heldout_images)
            entry.update(reference=reference_stats({n: getattr(scores, n) for n in ("s_gen", "s_disc")}),
                         n_reference=len(scores))
            _write_metadata(out, meta)
            scores = GalaxyScorer(out, threads=threads).score(heldout_images)
            entry["reference"].update(reference_stats({"s_anom": scores.s_anom}))
        logger.info("exported the galaxy scorer to %s", out / GALAXY_SCORER_FILE)

    _write_metadata(out, meta)
    return meta


def _write_metadata(out: Path, meta: dict[str, Any]) -> None:
    """``model.json`` written atomically (a reader never sees half a file)."""
    tmp = out / (METADATA_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out / METADATA_FILE)
