"""gpunet: a from-scratch MLP trainer whose one set of array math runs on numpy or cupy."""

__version__ = "0.1.0"
