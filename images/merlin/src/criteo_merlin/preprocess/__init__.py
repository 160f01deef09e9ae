"""The preprocess step (NVTabular): the workflow fitted on a window of extracted days, the days
transformed into training partitions, and the lookup tables serving reads. The raw-text decoding
lives here, shared by the in-process path and the dask workers (scale_out)."""
