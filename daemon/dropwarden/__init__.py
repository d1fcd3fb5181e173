"""dropwarden: judge every file that lands in a drop folder."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dropwarden")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"
