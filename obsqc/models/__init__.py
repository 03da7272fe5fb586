"""Learned scorers: the source-stamp autoencoder and the WGAN-GP galaxy scorer.

* Networks and their configs: ``config.py`` (no torch), ``autoencoder.py``, ``wgan.py``.
* The per-image latent refinement of Storey-Fisher et al. (2021) section 3.2, with a hand-written
  gradient so that it exports to ONNX: ``refine.py``.
* Training loops, checkpoints and ONNX export: ``train.py``, ``export.py`` (need torch).
* Scoring with onnxruntime only: ``onnx_scoring.py`` (never imports torch; the service uses only it).
* Data preparation shared with the service: ``preprocess.py``, ``cutouts.py`` (numpy only).

Nothing is imported here, so that ``import obsqc.models.onnx_scoring`` never pulls in torch.
"""
