"""criteo_kernel: what every image of the pipeline shares, and nothing else.

Each image (images/merlin, images/validator, images/monitoring, images/airflow) copies this
package whole; no image package imports another image's package. Every model version carries a
copy too, so the code Triton runs beside `model.onnx` reads the same schema and signature.

- `schema`: the Criteo Terabyte columns and raw file names;
- `codecs`: vectorised decoding and encoding of the raw fields (8-hex-digit hashes, integers, labels);
- `tsv`: reading and writing the raw tab-separated format;
- `storage`: one base URL, a local folder or gs://, partitions published whole;
- `result`: the step-result contract (manifest file, last log line) and the exit codes;
- `metrics`: AUC and logloss, offline (evaluate) and online (monitor) alike;
- `profiles`: the drift bins, PSI, and reading and writing data profiles;
- `signature`: the served model's inputs, output and Triton config;
- `artifacts`: the names of the files the steps exchange.

Imports nothing heavy at module level: pyarrow, fsspec and numpy are imported where used (numpy
at the top of the modules that compute), so the Airflow side and the serving code can read the
constants cheaply.
"""
