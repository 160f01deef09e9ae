"""The TaskFlow tasks and task groups the DAG files are made of (cheap to import: DAG files do)."""
