"""Object storage for uploaded CSVs, templates and generated images: one interface (contract.py), two backends
(local.py, and s3.py for any S3-compatible service, the only boto3 importer), chosen by registry.py; bucket and
key rules in keys.py."""
