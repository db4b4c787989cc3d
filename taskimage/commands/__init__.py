"""One module per command; each provides ``register(subparsers)``. See :mod:`taskimage.cli`."""
