"""Build a verified Numerai model-upload pickle from v5 data."""

__version__ = "0.1.0"
