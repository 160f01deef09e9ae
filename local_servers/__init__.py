"""The embedded default's stand-ins for production services, run as local processes.

In production these are managed services (Triton on GKE, GCS, Prometheus). On one machine the
demos, the tests and the benches start the real programs here: the tritonserver binary, a GCS
emulator and Prometheus, each bound to 127.0.0.1 on a free port, and stop them again. What tests and
benches both need lives here too (kube_fixtures, broken_days): no bench imports tests/. Not part of
the Airflow package, and not shipped in any image.
"""
