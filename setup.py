"""Shim for tools that still run ``setup.py``: the build system and all metadata (package data of
``loa_meta.pretrained`` included) are in pyproject.toml."""

from setuptools import setup

setup()
