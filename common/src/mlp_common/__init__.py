"""Shared library of the ml-pipeline stages.

Kept deliberately small and free of import-time side effects: the Airflow DAG imports
`mlp_common.exit_codes` at parse time, and every stage image installs this package.
"""
