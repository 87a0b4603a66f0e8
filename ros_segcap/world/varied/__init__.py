"""The varied (domain-randomised) tabletop world: a caller opts into it; the default world
(ros_segcap.world) is unchanged.

    spec = sample_varied_scene(seed, styles='train')      # or styles='held_out'
    scene = render_varied(spec, 480, 640)                 # a world.render.Scene
    ann = world.annotate(scene, 'referring', rng)         # same annotations as the default

21 kinds with 4 shape variants each, 11 colour words drawn over hue/saturation/value
ranges, finishes (plain, dots, stripes, checks, photo, metallic, glass), tables, walls,
lights, shadows, camera poses from a low side view to nearly top-down and camera effects.
Style families are split into train and held-out (families.STYLE_SPLIT); a scene draws
from one set only, and the training splits never draw held-out families
(varied_split_seed / sample_varied_split).
"""
from ros_segcap.world.varied.families import (COLOUR_NAMES, COLOUR_WORDS, KINDS, STYLE_SETS,
                                              STYLE_SPLIT, VOCAB, style_families)
from ros_segcap.world.varied.render import render_varied
from ros_segcap.world.varied.scene import (VariedObject, VariedSceneSpec, sample_varied_scene,
                                           sample_varied_split)

__all__ = ['COLOUR_NAMES', 'COLOUR_WORDS', 'KINDS', 'STYLE_SETS', 'STYLE_SPLIT', 'VOCAB',
           'VariedObject', 'VariedSceneSpec', 'render_varied',
           'sample_varied_scene', 'sample_varied_split', 'style_families']
