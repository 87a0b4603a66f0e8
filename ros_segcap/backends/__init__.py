"""Engine adapters: exported graphs behind the core's engine protocol.

`spec` names the vision and seg graphs' inputs and outputs; `graphs` holds them as torch
modules (what `segcap export` traces); `onnx_backend` and `tensorrt_backend` run the exported
files; `engine.ArrayEngine` turns their named arrays into the core's FrameFeatures and
DecoderOutput; `select.open_engine` picks a backend by name or `auto` (tensorrt, then
onnxruntime, then the model's own torch engine). `manifest` checks that engine files match
the loaded weights. Nothing here builds engines: that is `segcap export` (ros_segcap.export).
"""
