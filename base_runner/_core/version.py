"""The runner's version, as installed; in the package's lowest layer, so that any layer may name it."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("base-runner")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
