"""The HugeCTR trainer (the merlin image's hugectr target): HugeCTR's Parquet input, which
preprocess writes (hugectr_data), the DCN graph, its saved files and their conversion to ONNX."""
