"""Bzzz: a peer-to-peer task coordinator for a small cluster of AI agents."""

__version__ = "0.1.0"
