"""Compression of the student: mixed-precision int8 quantisation (`compress.quant`: post-training, by ONNX Runtime;
`compress.qat`: quantisation-aware training in the curriculum's phase 3)."""
