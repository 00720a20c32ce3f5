"""The installed distribution's version, read from its metadata."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("trioforge")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
