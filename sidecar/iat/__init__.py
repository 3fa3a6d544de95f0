"""IAT Toolkit sidecar: one command registry served over stdio, a localhost socket and HTTP."""

__version__ = "0.1.0"
