"""Engine backends: one protocol (named numpy arrays in and out), one spec of names.

`spec` defines the vision and seg graphs; `graphs` holds them as torch modules; the runners
are `torch_backend`, `onnx_backend` and `tensorrt_backend`; `select.open_engines` picks one
by name or `auto` (tensorrt, then onnxruntime, then torch).
"""
