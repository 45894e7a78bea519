"""Re-export: ``Principal`` lives in ``faceport.principal`` so services need not import the API layer."""

from faceport.principal import Principal

__all__ = ["Principal"]
