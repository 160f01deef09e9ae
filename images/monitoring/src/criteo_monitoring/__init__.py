"""criteo_monitoring: the serving side's own steps (no Airflow): the inference client that replays
Criteo days to Triton and writes the request log, the monitor that turns the request log into
Prometheus metrics, and `request_log_to_day`, which turns a day of the request log into raw training data.

    python -m criteo_monitoring {replay,monitor,request_log_to_day} --help
"""
