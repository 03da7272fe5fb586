"""obsqc: real-time quality control for observatory exposures."""

__version__ = "0.1.0"
