"""The Entropy Method of Alonso, Zhang & Li: pure functions on numpy arrays, numba kernels inside.

No I/O and no imports from the rest of obsqc. One module per step; ``ccd.py`` runs them on one
CCD and ``exposure.py`` combines CCDs.
"""
