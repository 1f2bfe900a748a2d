#!/usr/bin/env python
"""Run Lynx from a checkout without installing it: ``python lynx.py start``."""

from lynx.cli import main

if __name__ == "__main__":
    main()
