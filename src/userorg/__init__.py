"""userorg: the User & Organization Service."""

__version__ = "0.1.0"
