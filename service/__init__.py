"""attention-serve: serve attention models over REST and standard protocols, attention included."""

__version__ = "0.1.0"
