"""Shared-prefix packing and the [SEG] pointer loss of stage 2 (tiny-random model)."""
from __future__ import annotations

import pytest
import torch

from ros_segcap.models.segcap.config import get_config
from ros_segcap.models.segcap.model import build_model
from ros_segcap.models.segcap.weights import save_model
from training.cache import build_shard, load_cache
from training.config import make_config
from training.losses import mask_iou_matrix, pointer_losses
from training.pack import pack_layout
from training.stages import build_stage
from training.train import make_items


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('pack')
    torch.manual_seed(0)
    config = get_config('tiny-random')
    (root / 'cache').mkdir()
    torch.save(build_shard(config, 'train', 0, 2), root / 'cache' / 'shard-0000000.pt')
    init = save_model(build_model(config, pretrained=False), root / 'init')
    return root, init


def test_layout_lets_each_sample_see_the_prefix_and_itself_only():
    mask, pos, spans = pack_layout(3, [2, 4])
    assert mask.shape == (1, 1, 9, 9)
    assert spans == [(3, 5), (5, 9)]
    assert pos[0].tolist() == [0, 1, 2, 3, 4, 3, 4, 5, 6]
    see = mask[0, 0] == 0
    assert see[:3, :3].equal(torch.ones(3, 3, dtype=torch.bool).tril())
    assert see[3:, :3].all()  # every sample sees the whole prefix
    assert not see[5:, 3:5].any() and not see[3:5, 5:].any()  # but not the other sample
    assert see[5:, 5:].equal(torch.ones(4, 4, dtype=torch.bool).tril())


def test_make_items_packs_the_samples_of_a_scene(tiny):
    root, init = tiny
    scenes = load_cache(root / 'cache')
    single = make_items(scenes, make_config(2, dict(init=str(init), simple_refs=1)))
    packed = make_items(scenes, make_config(2, dict(init=str(init), simple_refs=1, pack=4)))
    assert all(len(samples) <= 4 for _, samples in packed)
    assert sum(len(samples) for _, samples in packed) == len(single)
    for scene, samples in packed:
        own = sorted((a.task, a.question, a.answer) for s, a in single if s is scene)
        assert all((a.task, a.question, a.answer) in own for a in samples)
    key = sorted((id(s), a.question, a.answer) for s, samples in packed for a in samples)
    assert key == sorted((id(s), a.question, a.answer) for s, a in single)


def test_packed_loss_and_gradients_equal_the_mean_over_single_samples(tiny):
    root, init = tiny
    cfg = make_config(2, dict(init=str(init), cache=str(root / 'cache'), pack=16,
                              lora_dropout=0.0, model='tiny-random'))
    stage = build_stage(cfg)
    scene = load_cache(root / 'cache')[0]
    samples = scene.samples
    assert len({a.task for a in samples}) >= 4  # referring, gcg, region prompts, ...
    packed, logs = stage((scene, samples))
    packed.backward()
    grads = {n: p.grad.clone() for n, p in stage.named_parameters() if p.grad is not None}
    stage.zero_grad()
    singles = []
    for a in samples:
        loss, _ = stage((scene, a))
        (loss / len(samples)).backward()
        singles.append(float(loss))
    assert float(packed) == pytest.approx(sum(singles) / len(singles), rel=1e-5)
    assert grads.keys() == {n for n, p in stage.named_parameters() if p.grad is not None}
    for n, p in stage.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)
    assert 'seg' in logs and 'ce' in logs


def test_pointer_loss_prefers_the_query_whose_mask_is_the_target():
    torch.manual_seed(0)
    keys = torch.randn(5, 8)
    masks = torch.full((5, 6, 6), -5.0)
    for i in range(5):
        masks[i, i, :] = 5.0  # query i owns row i
    target = (masks[2:3] > 0)
    assert mask_iou_matrix(masks, target)[0].argmax() == 2
    right, mse_right, n = pointer_losses(keys[2:3].clone(), keys, masks, target, 0.1, 0.5)
    wrong, mse_wrong, _ = pointer_losses(keys[0:1].clone(), keys, masks, target, 0.1, 0.5)
    assert n == 1 and float(right) < 0.1 < float(wrong)
    assert float(mse_right) == 0.0 < float(mse_wrong)
    nowhere = torch.zeros(1, 6, 6, dtype=torch.bool)
    nowhere[0, :, 5] = True  # a column: IoU 1/11 with every row
    q = keys[0:1].clone().requires_grad_(True)
    ce, mse, n = pointer_losses(q, keys, masks, nowhere, 0.1, 0.5)
    assert n == 0 and float(ce) == 0.0
    ce.backward()  # still part of the graph, with a zero gradient
    assert q.grad is not None and float(q.grad.abs().sum()) == 0.0


def test_colour_labels_come_from_the_phrase():
    from ros_segcap.world.palette import COLOUR_NAMES
    from training.stages import colour_label
    assert COLOUR_NAMES[colour_label('the red cup')] == 'red'
    assert COLOUR_NAMES[colour_label('white bowl')] == 'white'
    assert colour_label('rightmost object') is None and colour_label('') is None


def test_projector_learning_rate_multiplier(tiny):
    from training.loop import build_optimizer
    root, init = tiny
    cfg = make_config(2, dict(init=str(init), lr=1e-3, proj_lr_mult=4.0, colour_weight=1.0))
    stage = build_stage(cfg)
    opt = build_optimizer(stage, cfg)
    lr_of = {id(p): g['lr'] for g in opt.param_groups for p in g['params']}
    names = dict(stage.named_parameters())
    assert lr_of[id(names['model.projectors.pool_proj.weight'])] == pytest.approx(4e-3)
    lora = [n for n in names if 'lora_A' in n][0]
    assert lr_of[id(names[lora])] == pytest.approx(1e-3)
    assert sum(len(g['params']) for g in opt.param_groups) == \
        sum(p.requires_grad for p in stage.parameters())


def test_loaded_adapters_follow_the_configured_dropout(tiny):
    root, init = tiny
    from torch import nn
    first = build_stage(make_config(2, dict(init=str(init), lora_dropout=0.3)))
    adapted = save_model(first.model, root / 'adapted')
    for p in (0.0, 0.2):
        stage = build_stage(make_config(2, dict(init=str(adapted), lora_dropout=p)))
        drops = [m for m in stage.modules() if isinstance(m, nn.ModuleDict)
                 and any('lora_dropout' in n for n, _ in stage.named_modules()
                         if _ is m)]
        assert drops
        for d in drops:
            for layer in d.values():
                if p:
                    assert isinstance(layer, nn.Dropout) and layer.p == p
                else:
                    assert isinstance(layer, nn.Identity)
        assert stage.model.lora_info['dropout'] == p


def test_training_region_tokens_are_the_runtime_ones(tiny):
    """A point on a found object stands for it in training too (as in visual_prompts)."""
    from dataclasses import replace

    from ros_segcap.models.segcap.decoder import PROMPT_KIND_IDS
    root, init = tiny
    stage = build_stage(make_config(2, dict(init=str(init), cache=str(root / 'cache'))))
    scene = load_cache(root / 'cache')[0]
    m = stage.model
    with torch.no_grad():
        frame = stage.frame(scene)
        keep, objects = m.object_rows(frame)
        logits = frame.mask_logits[0, keep]
        best = logits.max(0)
        row, col = (best.values >= 0).nonzero()[0].tolist()  # a cell some kept mask owns
        k = int(best.indices[row, col])
        hm = m.config.mask_size
        point = [(col + 0.5) / hm, (row + 0.5) / hm, 0.0, 0.0]
        sample = next(a for a in scene.samples if a.kinds.shape[1] == 1)
        sample = replace(sample, kinds=torch.tensor([[PROMPT_KIND_IDS['point']]]),
                         boxes=torch.tensor([[point]]),
                         restrict=torch.ones(1, 1, hm, hm, dtype=torch.bool))
        tokens = stage.region_tokens(frame, sample)
    torch.testing.assert_close(tokens[0], objects[k])


def test_place_targets_come_from_a_region_description():
    from training.stages import place_targets  # PLACE_WORDS: left, right, front, back
    assert place_targets('A red cup at the front left of the table.') == [1, -1, 1, -1]
    assert place_targets('A grey can at the back of the table.') == [-1, -1, -1, 1]
    assert place_targets('A blue ball at the centre of the table.') == [-1, -1, -1, -1]
    assert place_targets('It is red.') is None
    assert place_targets('A cup at the far end of the table.') is None


def test_place_loss_trains_the_place_head_towards_the_described_place(tmp_path, tiny):
    """place_weight: a description's place words pull the place head's output on the
    described object's prompt mask towards +1 (said) / -1 (not said); other samples add 0."""
    from dataclasses import replace

    root, _ = tiny
    torch.manual_seed(0)
    init = save_model(build_model(replace(get_config('tiny-random'), place_anchor=True),
                                  pretrained=False), tmp_path / 'init')
    cfg = make_config(2, dict(init=str(init), cache=str(root / 'cache'), place_weight=1.0,
                              lora_dropout=0.0))
    stage = build_stage(cfg)
    scene = load_cache(root / 'cache')[0]
    prompted = next(a for a in scene.samples if a.kinds.shape[1])
    plain = next(a for a in scene.samples if not a.kinds.shape[1])
    described = replace(prompted, answer='A red cup at the front left of the table.')
    frame = stage.frame(scene)
    assert float(stage.place_loss(frame, plain, {})) == 0.0
    head = stage.model.projectors.place_head
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    losses = []
    for _ in range(30):
        logs: dict = {}
        loss = stage.place_loss(frame, described, logs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(logs['place'].detach()))
    assert losses[0] == pytest.approx(1.0, abs=1e-3)  # zero-initialised head: tanh(0) = 0
    assert losses[-1] < 0.5 * losses[0]
    from training.loop import build_optimizer
    cfg = make_config(2, dict(init=str(init), lr=1e-4, proj_lr_mult=3, place_lr_mult=100))
    lrs = {id(p): g['lr'] for g in build_optimizer(stage, cfg).param_groups
           for p in g['params']}
    assert [lrs[id(p)] for p in head.parameters()] == [pytest.approx(1e-2)] * 2
    other = next(p for n, p in stage.named_parameters()
                 if 'projectors.' in n and 'place_head' not in n and p.requires_grad)
    assert lrs[id(other)] == pytest.approx(3e-4)
    same = make_config(2, dict(init=str(init), lr=1e-4, proj_lr_mult=3))  # no place_lr_mult
    lrs = {id(p): g['lr'] for g in build_optimizer(stage, same).param_groups
           for p in g['params']}
    assert [lrs[id(p)] for p in head.parameters()] == [pytest.approx(3e-4)] * 2


def test_place_fit_sets_the_place_head_to_the_described_places(tmp_path, tiny):
    """place_fit: before training, the place head is fitted to what the region descriptions
    of the first scenes say (here the same prompts described as left and as right)."""
    from dataclasses import replace

    root, _ = tiny
    torch.manual_seed(0)
    init = save_model(build_model(replace(get_config('tiny-random'), place_anchor=True),
                                  pretrained=False), tmp_path / 'init')
    stage = build_stage(make_config(2, dict(init=str(init), cache=str(root / 'cache'))))
    scenes = load_cache(root / 'cache')
    places = ('the front left', 'the back right', 'the centre', 'the left')
    described = []
    for k, scene in enumerate(scenes):
        prompted = [a for a in scene.samples if a.kinds.shape[1]]
        described.append(replace(scene, samples=[
            replace(a, answer=f'A red cup at {places[(k + i) % 4]} of the table.')
            for i, a in enumerate(prompted)]))
    x, y = stage.described_places(described)
    assert len(x) == sum(len(s.samples) for s in described) > 0 and y.shape == (len(x), 4)
    assert x.min() >= 0 and x.max() <= 1  # centre x, centre y, sqrt area share
    fit = stage.fit_place_head(described, iters=300)
    assert fit['descriptions'] == len(x)
    assert fit['mse_before'] == pytest.approx(1.0, abs=1e-3)  # zero head: tanh(0) = 0
    assert fit['mse_after'] < fit['mse_before']
    head = stage.model.projectors.place_head
    assert float(head.weight.detach().abs().sum()) > 0
    with pytest.raises(ValueError, match='no region description'):
        stage.fit_place_head(scenes[:0])
