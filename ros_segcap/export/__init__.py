"""Engine export: ONNX graphs, TensorRT plans and their manifest entries.

`build.export_engines` is what `segcap export` runs, the only place engines are built;
`ros_segcap.backends.manifest.check_engines` is what the backends ask before they open a file.
"""
