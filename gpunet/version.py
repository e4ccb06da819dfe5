"""The package version, in a module of its own so that anything can import it without importing gpunet's API."""

__version__ = "0.1.0"
