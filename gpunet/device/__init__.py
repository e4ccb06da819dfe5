"""Which device arrays live on (numpy, cupy, any DLPack array), resolved once at the edge."""
