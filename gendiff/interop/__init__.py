"""Bridges to other libraries, each an optional extra (``pip install 'gendiff[diffusers]'``).

Importing ``gendiff.interop.diffusers`` does not import diffusers itself; only the objects
passed in come from it.
"""
