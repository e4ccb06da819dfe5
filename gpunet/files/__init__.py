"""Users' files are sacred: inputs checked before reading, outputs claimed and written atomically, signals."""
