"""seg_pointer: a [SEG] state selects one of the frame's object tokens and returns its mask."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from ros_segcap.core.preprocess import point_queries
from ros_segcap.core.protocol import Request
from ros_segcap.core.torch_engine import TorchEngine
from ros_segcap.models.segcap.config import get_config
from ros_segcap.models.segcap.model import build_model, distinct_picks, mask_places
from ros_segcap.models.segcap.weights import load_model, save_model
from training.cache import build_shard, load_cache
from training.config import make_config
from training.stages import build_stage


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('pointer')
    torch.manual_seed(0)
    config = get_config('tiny-random').replace(seg_pointer=True)
    (root / 'cache').mkdir()
    torch.save(build_shard(config, 'train', 0, 2), root / 'cache' / 'shard-0000000.pt')
    init = save_model(build_model(config, pretrained=False), root / 'init')
    return root, init


def test_mask_places_are_centre_and_size():
    logits = torch.full((2, 8, 8), -30.0)
    logits[0, :, :4] = 30.0  # left half
    logits[1, 6:, 6:] = 30.0  # bottom-right 2x2 corner
    place = mask_places(logits)
    xs = torch.linspace(0, 1, 8)
    torch.testing.assert_close(place[0], torch.stack([xs[:4].mean(), torch.tensor(0.5),
                                                      torch.tensor(0.5).sqrt()]))
    torch.testing.assert_close(place[1], torch.stack([xs[6:].mean(), xs[6:].mean(),
                                                      torch.tensor(4 / 64).sqrt()]))


def _pointing_left(model) -> None:
    """Every [SEG] state points at the object with the smallest mask centre x."""
    proj = model.projectors
    with torch.no_grad():
        for layer in (proj.seg_query, proj.seg_key, proj.seg_place):
            layer.weight.zero_()
            layer.bias.zero_()
        proj.seg_query.bias[0] = 10.0
        proj.seg_place.weight[0, 0] = -1.0


def test_seg_masks_are_the_pointed_objects_masks(tiny):
    root, init = tiny
    model = load_model(init).eval()
    h = model.config.llm_hidden
    _pointing_left(model)
    with torch.no_grad():
        frame = model.encode(torch.rand(1, 3, 128, 128) * 255)
        keep = model.kept_queries(frame)
        assert keep.numel() >= 2
        place = mask_places(frame.mask_logits[0, keep])
        by_x = keep[place[:, 0].argsort()]
        states = torch.randn(3, h)
        masks = model.seg_masks(frame, states)
        alone = model.seg_masks(frame, torch.randn(1, h))
        last = model.seg_mask_logits(frame, states[2:], None, earlier=states[:2])
    assert masks.shape == (3,) + frame.mask_logits.shape[-2:]
    assert torch.equal(alone[0], frame.mask_logits[0, by_x[0]])
    assert torch.equal(last[0], masks[2])  # the answer's earlier [SEG]s took the first two
    # one answer's [SEG]s point at different objects: the leftmost, then the next ones
    for m, want in zip(masks, by_x):
        assert torch.equal(m, frame.mask_logits[0, want])


def test_pointer_training_points_at_the_target(tiny):
    root, init = tiny
    cfg = make_config(2, dict(init=str(init), cache=str(root / 'cache'), lora_dropout=0.0,
                              ptr_min_iou=0.0, lr=3e-3))
    stage = build_stage(cfg)
    scene = load_cache(root / 'cache')[0]
    sample = next(a for a in scene.samples if a.task == 'gcg' and a.masks.shape[0] >= 2)
    loss, logs = stage((scene, sample))
    assert 'ptr' in logs and 'seg' not in logs  # no decoder run for pointer models
    first = logs['ptr']
    params = [p for p in stage.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=3e-3)
    for _ in range(30):
        opt.zero_grad()
        loss, logs = stage((scene, sample))
        loss.backward()
        opt.step()
    assert logs['ptr'] < 0.5 * first and logs['ptr_acc'] == 1.0, (first, logs)
    named = dict(stage.named_parameters())
    assert named['model.projectors.seg_key.weight'].requires_grad


def test_pointer_masks_come_out_of_the_pipeline_at_image_size(tiny):
    from ros_segcap.runtime import PipelineConfig, open_pipeline
    from ros_segcap.core.preprocess import unletterbox
    root, init = tiny
    pipe = open_pipeline(PipelineConfig(model=str(init)))
    image = (np.random.default_rng(0).random((90, 160, 3)) * 255).astype(np.uint8)
    with torch.no_grad():
        frame, box = pipe.encode(image)
        hidden = torch.randn(2, pipe.model.config.llm_hidden)
        out = pipe._mask_logits(frame, box, hidden)
        expected = unletterbox(pipe.model.seg_masks(frame, hidden), box)
    assert out.shape == (2, 90, 160)
    assert torch.equal(out, expected)


def test_simple_absent_names_pairs_that_are_not_in_the_scene(tiny):
    from ros_segcap.core.answer import parse_answer
    from training.cache import simple_absent
    root, _ = tiny
    for scene in load_cache(root / 'cache'):
        gcg = next(a for a in scene.samples if a.task == 'gcg')
        present = {p for p in parse_answer(gcg.answer).phrases}
        made = simple_absent(scene, 3)
        again = simple_absent(scene, 3)  # deterministic
        assert len(made) == 3 and [a.answer for a in made] == [a.answer for a in again]
        assert len({a.question for a in made}) == 3
        for a in made:
            pair = a.answer.removeprefix('There is no ').removesuffix(' in this image.')
            assert pair in a.question and pair not in present
            assert a.task == 'absent' and a.masks.shape[0] == 0 and '[SEG]' not in a.answer
            colour, kind = pair.split()
            assert any(p.startswith(colour + ' ') or p.endswith(' ' + kind) for p in present)


def test_plural_referring_lists_three_or_more_targets_left_to_right(tiny):
    from ros_segcap.core.answer import parse_answer
    from training.cache import join_targets, plural_referring
    root, _ = tiny
    assert join_targets(['red cup']) == '<p> the red cup </p> [SEG].'
    assert join_targets(['a', 'b', 'c']) == ('<p> the a </p> [SEG], <p> the b </p> [SEG] and '
                                             '<p> the c </p> [SEG].')
    made_any = False
    for scene in load_cache(root / 'cache'):
        gcg = next(a for a in scene.samples if a.task == 'gcg')
        objects = [p for p, m in zip(parse_answer(gcg.answer).phrases, gcg.masks)
                   if 'table' not in p and m.any()]  # visible on the mask grid
        made = plural_referring(scene, 2)
        if len(objects) < 3:
            assert made == []
            continue
        made_any = True
        first = made[0]
        assert first.question.count('all the objects') == 1 and first.task == 'referring'
        got = parse_answer(first.answer).phrases
        assert sorted(got) == sorted(f'the {p}' for p in objects)
        assert first.masks.shape[0] == len(got) == first.answer.count('[SEG]')
        xs = [float(m.float().nonzero()[:, 1].float().mean()) for m in first.masks]
        assert xs == sorted(xs)
    assert made_any, 'the test cache should have a scene with three or more objects'


def test_language_stage_keeps_only_the_recent_frames(tiny, monkeypatch):
    """The frozen decoder's frames are memoised per scene, the FRAME_MEMO most recent."""
    import training.stages as stages
    root, init = tiny
    monkeypatch.setattr(stages, 'FRAME_MEMO', 1)
    stage = build_stage(make_config(2, dict(init=str(init), cache=str(root / 'cache'))))
    first, second = load_cache(root / 'cache')[:2]
    a = stage.frame(first)
    assert stage.frame(first) is a  # memoised
    b = stage.frame(second)
    assert list(stage._frames) == [second.seed] and stage.frame(second) is b
    again = stage.frame(first)  # computed anew, the same values
    assert again is not a
    torch.testing.assert_close(again.mask_logits, a.mask_logits)


def test_distinct_picks_take_each_object_once_while_any_is_left():
    scores = torch.tensor([[5.0, 1.0, 0.0], [4.0, 3.0, 0.0], [9.0, 8.0, 7.0], [1.0, 2.0, 0.0]])
    assert distinct_picks(scores).tolist() == [0, 1, 2, 1]  # all taken: the best again
    assert distinct_picks(scores[:1]).tolist() == [0]
    assert distinct_picks(torch.zeros(0, 3)).tolist() == []


def test_a_named_seg_takes_the_heads_object_when_they_are_clear(monkeypatch):
    torch.manual_seed(0)
    config = get_config('tiny-random').replace(seg_pointer=True, word_anchor=True,
                                               plain_pick=(0.05, 1.0))
    model = build_model(config, pretrained=False).eval()
    _pointing_left(model)
    cup, red = config.class_names.index('cup'), config.colour_names.index('red')
    with torch.no_grad():
        frame = model.encode(torch.rand(1, 3, 128, 128) * 255)
        keep = model.kept_queries(frame)
        assert keep.numel() >= 3
        by_x = keep[mask_places(frame.mask_logits[0, keep])[:, 0].argsort()]
        heads = by_x[-1]  # the object the heads like best is the rightmost one
        classes = torch.full((keep.numel(), config.num_classes + 1), 0.01)
        colours = torch.full((keep.numel(), len(config.colour_names)), 0.01)
        classes[keep == heads, cup], colours[keep == heads, red] = 0.9, 0.9
        monkeypatch.setattr(model, 'kept_probs', lambda f: (keep, classes, colours))
        h = torch.randn(2, config.llm_hidden)

        def masks(phrases, states=h, earlier=None):
            return model.seg_mask_logits(frame, states, None, earlier, Request(phrases=phrases))
        picked = masks(['the red cup', 'the red cup'])
        assert torch.equal(picked[0], frame.mask_logits[0, heads])
        # the second red cup is another object: the pointer's (leftmost) among the rest
        assert torch.equal(picked[1], frame.mask_logits[0, by_x[0]])
        assert torch.equal(masks(['cup', ''])[0], frame.mask_logits[0, heads])
        assert torch.equal(masks(['', ''])[0], frame.mask_logits[0, by_x[0]])  # no phrase
        assert torch.equal(masks(['the red cup on the left', ''])[0],  # not one kind
                           frame.mask_logits[0, by_x[0]])
        # an answer's later [SEG]: the phrases of the earlier ones come first
        later = masks(['the green ball', 'red cup'], h[1:], earlier=h[:1])
        assert torch.equal(later[0], frame.mask_logits[0, heads])
        classes[keep == heads, cup] = 0.04  # 0.04 x 0.9 < 0.05: not clear, the LLM decides
        assert torch.equal(masks(['the red cup', ''])[0], frame.mask_logits[0, by_x[0]])
        off = build_model(config.replace(plain_pick=(0.0, 0.0)), pretrained=False)
        assert off.named_scores(frame, ['the red cup']) is None


def test_segment_mark_takes_the_clicked_object_whatever_the_pointer_says():
    torch.manual_seed(0)
    config = get_config('tiny-random').replace(seg_pointer=True, prompt_pick=True)
    model = build_model(config, pretrained=False).eval()
    _pointing_left(model)
    with torch.no_grad():
        frame = model.encode(torch.rand(1, 3, 128, 128) * 255)
        keep = model.kept_queries(frame)
        by_x = keep[mask_places(frame.mask_logits[0, keep])[:, 0].argsort()]
        logits = frame.mask_logits[0, keep]  # a point snaps to the kept mask highest there
        top, best = logits.max(0)
        cells = ((top >= 0) & (keep[best] != by_x[0])).nonzero()
        assert len(cells)  # a cell on an object the pointer does not pick
        row, col = [int(v) for v in cells[0]]
        right = frame.mask_logits[0, keep[best[row, col]]]
        hm = config.mask_size
        click = point_queries([((col + 0.5) / hm, (row + 0.5) / hm)], hm)
        h = torch.randn(1, config.llm_hidden)

        def mask(question, m=model):
            asked = Request(question, click, [''])
            return m.seg_mask_logits(frame, h, TorchEngine(m, 'cpu'), None, asked)[0]
        assert torch.equal(mask('Please segment <mark>.'), right)
        left = frame.mask_logits[0, by_x[0]]  # the pointer's pick
        assert torch.equal(mask('What is <mark>?'), left)
        off = build_model(config.replace(prompt_pick=False), pretrained=False).eval()
        off.load_state_dict(model.state_dict())
        assert torch.equal(mask('Please segment <mark>.', off), left)
