"""Engine export: ONNX graphs, TensorRT plans, the manifest and its staleness checks.

`build.export_engines` is what `segcap export` runs; `manifest.check_engines` is what the
backends ask before they open a file.
"""
