"""faceport: one self-hosted server for face AI."""

__version__ = "0.1.0"
