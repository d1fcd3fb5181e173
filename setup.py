"""The one thing pyproject.toml cannot say stably: the regex detector's optional C extension.

`dropwarden_regex._textpos` (plugins/dropwarden_regex/textpos.py says what it does) is optional: an
install without a C compiler still succeeds, and the detector runs the same arithmetic in Python."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("dropwarden_regex._textpos", sources=["plugins/dropwarden_regex/_textpos.c"], optional=True)
    ]
)
