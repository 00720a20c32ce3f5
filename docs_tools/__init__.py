"""Build helpers for the documentation site (``make docs``); not part of the package."""
