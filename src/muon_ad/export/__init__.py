"""ONNX export of the student and its parity checks against torch (`export.onnx`)."""
