"""Cambist: the exchange and router for inference compute."""

__version__ = "0.1.0"
__all__ = ["__version__"]
