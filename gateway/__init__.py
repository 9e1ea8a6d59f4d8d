"""eservice-gateway: the MX for retired filing addresses."""

__all__ = ["__version__"]

__version__ = "0.1.0"
