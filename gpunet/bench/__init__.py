"""`gpunet bench`: every backend side by side (gpunet, PyTorch, scikit-learn), timed honestly, with figures."""
