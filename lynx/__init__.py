"""Lynx links the steps of an ML process and runs them one after another."""

__version__ = "1.0.0"
