"""criteo_validator: the Criteo pipeline's data-validation step (Great Expectations 1.x, no Airflow).

Run as `python -m criteo_validator --input PART --suite raw_day --data-docs DIR --run-name NAME`;
see `criteo_validator.validate` for the design.
"""
