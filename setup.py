"""Shim for tools that still run ``setup.py``: the build system and all metadata are in pyproject.toml."""

from setuptools import setup

setup()
