"""The ONNX graphs: the bare model exported (`export`), the nodes around it (`prepost`), and INT8 by Q/DQ nodes
(`qdq`, calibrated by `calibration`). onnx, torch and onnxruntime are imported by the functions that need them."""
