"""Reading a ledger-exporter datalake: storage adapters for a local folder, S3
(and S3-compatible endpoints) and GCS, shared by every stream of one lake."""
