"""Training: the one Trainer every front end uses, its engines (local, Dask), checkpoints and checks."""
