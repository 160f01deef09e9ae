"""Step code of the Criteo MLOps pipeline: what the GPU images run.

Imports no Airflow. Each step is a CLI (`python -m criteo_merlin STEP --help`) so that the same
entry point runs as a Kubernetes pod in production and as a local subprocess on the embedded
default.
"""
