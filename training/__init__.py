"""Training recipe for ros_segcap models (stages 0, 1, 2), data and evaluation."""
