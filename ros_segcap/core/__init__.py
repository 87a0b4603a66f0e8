"""The model-agnostic runtime: the Pipeline, the model and engine protocols, the option table,
image geometry, answer parsing, edge refinement and overlays.

Imports numpy, torch and OpenCV only; never a model family, an engine adapter, ROS, the CLI
or training (.importlinter states the rules, tests/test_layers.py checks them).
"""
