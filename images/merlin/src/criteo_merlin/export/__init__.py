"""The served model package: export writes it (model.onnx, the Triton python-backend model of
triton/ and the lookup tables), and evaluate scores candidates through each package's own code."""
