"""Streams Stellar ledgers out of a ledger-exporter datalake over gRPC."""

__version__ = "0.1.0"
