"""Raw days in: the synthetic Criteo days of the demo and tests (synth), and a raw day read into
the extracted Parquet every later step starts from (extract)."""
