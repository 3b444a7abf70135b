"""What the ml-pipeline DAG is made of: stage specs (described once) and the runners that turn them into operators.

Importing this package is cheap on purpose: the DAG file imports it at parse time, and provider
modules (docker, cncf.kubernetes) are imported only by the runner module actually selected.
"""
