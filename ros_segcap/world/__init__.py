"""A procedural tabletop world: scenes with exact masks and generated annotations.

Numpy and OpenCV only (no torch, no ROS): the runtime's demo camera renders from it and the
training data (training/data/tabletop.py) maps its scenes into Samples.
"""
from ros_segcap.world.annotate import TASKS, Annotation, PromptSpec, annotate
from ros_segcap.world.camera import TabletopCamera
from ros_segcap.world.layout import (ObjectSpec, SceneSpec, SPLITS, sample_scene, seed_split,
                                     split_seed)
from ros_segcap.world.palette import CLASS_NAMES, COLOUR_NAMES, KINDS
from ros_segcap.world.render import Scene, render

__all__ = ['Annotation', 'CLASS_NAMES', 'COLOUR_NAMES', 'KINDS', 'ObjectSpec', 'PromptSpec',
           'SPLITS', 'Scene', 'SceneSpec', 'TASKS', 'TabletopCamera', 'annotate', 'render',
           'sample_scene', 'seed_split', 'split_seed']
