"""Building the project's container images (``python3 -m images.build``)."""
