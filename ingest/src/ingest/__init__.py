"""Ingest stage: raw files for a logical date (or a history) into `raw.*`, every line accounted for."""
