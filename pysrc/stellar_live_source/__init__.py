"""Streams Stellar ledgers out of a ledger-exporter datalake over gRPC."""

from importlib.metadata import PackageNotFoundError, version

try:
    # Set from the git tag by setuptools-scm when the package is built or installed.
    __version__ = version("stellar-live-source-datalake")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
