"""The `gpunet` command line: parsing options and printing; the work is done by the library."""
