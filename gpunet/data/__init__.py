"""Datasets: the built-in ones (found, fetched, checked), a user's own files, pictures to predict."""
