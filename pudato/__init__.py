"""Pudato: data operations for public-sector data teams."""

__version__ = "0.1.0"
