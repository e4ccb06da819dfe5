"""gpunet: a from-scratch MLP trainer whose one set of array math runs on numpy or cupy.

The Python API is what this module names; everything else is internal:

    MLPClassifier   a scikit-learn style estimator over numpy, cupy or any DLPack arrays
    load(path)      a fitted MLPClassifier from a checkpoint (its own save() or `gpunet train --checkpoint`)
    load_dataset()  the arrays of a built-in dataset, or of a user's .npz file or IDX folder
    ConvergenceWarning  what fit warns with when a run's loss blew up: the model is kept
"""

from gpunet.data.userdata import load_dataset
from gpunet.errors import ConvergenceWarning
from gpunet.estimator import MLPClassifier, NotFittedError, load
from gpunet.version import __version__

__all__ = ["ConvergenceWarning", "MLPClassifier", "NotFittedError", "__version__", "load", "load_dataset"]
