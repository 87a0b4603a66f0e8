"""training.recipe: one command runs the cache and every stage, skips finished steps and
continues stopped ones; the time limit stops a stage after a step with a checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ros_segcap.models import load_model
from ros_segcap.models.segcap.config import VARIED_CLASSES, VARIED_COLOURS, get_config
from ros_segcap.world.varied import VOCAB
from training.cache import build_shard, simple_absent
from training.config import make_config
from training.loop import CHECKPOINT
from training.recipe import commands, read_recipe, run as run_recipe
from training.train import model_vocab, run as run_stage

RECIPE = Path(__file__).resolve().parents[1] / 'training' / 'recipes' / 'segcap-tiny'


def _write(recipe: Path, steps: dict) -> Path:
    recipe.mkdir(parents=True, exist_ok=True)
    for name, values in steps.items():
        (recipe / f'{name}.json').write_text(json.dumps(values))
    return recipe


def _tiny_recipe(root: Path) -> Path:
    stage = dict(steps=2, accum=1, threads=1, ckpt_every=1)
    return _write(root / 'recipe', {
        'cache': dict(model='tiny-random', scenes=3, shard_size=2, threads=1),
        'stage0': dict(stage, model='tiny-random'), 'stage1': stage,
        'stage2': dict(stage, pack=4, simple_refs=1, simple_absent=1),
        'second_look': dict(world='default', size=32, scenes=2, test_scenes=1, epochs=1,
                            batch=4, threads=1)})


def test_the_varied_recipe_reads_and_chains_its_stages(tmp_path):
    steps = read_recipe(RECIPE)
    assert steps['cache']['world'] == 'varied'
    todo = commands(steps, tmp_path)
    assert [name for name, _, _ in todo] == ['cache', 'stage0', 'stage0b', 'stage1', 'stage2',
                                             'stage2b', 'ship', 'second_look']
    stage2 = todo[4][1]
    assert f'--init={tmp_path / "stage1" / "model"}' in stage2
    assert f'--cache={tmp_path / "cache"}' in stage2 and '--resume' not in stage2
    assert f'--init={tmp_path / "stage0" / "model"}' in todo[2][1], 'stage0b goes on from stage0'
    assert todo[-2][1][:3] == ['training.ship', '--run', str(tmp_path / 'stage2b')]
    assert todo[-1][1][:3] == ['training.second_look', '--model', str(tmp_path / 'model')]
    (tmp_path / 'stage2').mkdir()
    (tmp_path / 'stage2' / CHECKPOINT).write_bytes(b'')
    assert '--resume' in commands(steps, tmp_path, stop_at=5.0)[4][1]
    assert '--stop_at=5' in commands(steps, tmp_path, stop_at=5.0)[4][1]


@pytest.mark.parametrize('broken, message', [
    ({'stage1': None}, 'stage1.json is missing'),
    ({'cache': {'scenes': 3, 'colour': 'red'}}, r"unknown options \['colour'\]"),
    ({'stage2': {'steps': 3, 'lr_typo': 1}}, 'stage2.json: unknown option --lr_typo'),
    ({'stage0': [1, 2]}, 'must hold a JSON object'),
    ({'second_look': {'epochs': 1, 'crop': 96}}, r"second_look.json: unknown options \['crop'\]"),
])
def test_a_broken_recipe_is_refused_before_anything_runs(tmp_path, broken, message):
    steps = {'cache': {'scenes': 3}, 'stage0': {}, 'stage1': {}, 'stage2': {}}
    steps.update(broken)
    recipe = _write(tmp_path / 'r', {k: v for k, v in steps.items() if v is not None})
    with pytest.raises(ValueError, match=message):
        run_recipe(recipe, tmp_path / 'out')
    assert not (tmp_path / 'out' / 'cache').exists()


def test_the_recipe_runs_every_step_and_skips_finished_ones(tmp_path, capsys):
    recipe, out = _tiny_recipe(tmp_path), tmp_path / 'run'
    assert run_recipe(recipe, out)
    model = load_model(str(out / 'model'))
    assert model.trained and model.lora_info is not None
    assert model.config.second_look == 32 and model.second_look is not None
    times = json.loads((out / 'recipe.json').read_text())
    assert set(times) == {'cache', 'stage0', 'stage1', 'stage2', 'ship', 'second_look'}
    for row in times.values():
        assert row['done'] and row['chunks'] == 1 and row['seconds'] > 0
        assert row['peak_rss_mb'] > 50  # a real process's peak RAM, not zero
    shard_files = sorted(p.name for p in (out / 'cache').glob('shard-*.pt'))
    assert shard_files == ['shard-0000000.pt', 'shard-0000002.pt']
    # a second run finds the model and changes nothing; without it, only ship runs again
    capsys.readouterr()
    assert run_recipe(recipe, out)
    assert capsys.readouterr().out.count('is done') == 6
    (out / 'model' / 'config.json').unlink()
    (out / 'second_look' / 'report.json').unlink()
    assert run_recipe(recipe, out)
    times = json.loads((out / 'recipe.json').read_text())
    assert times['ship']['chunks'] == 2 and times['stage2']['chunks'] == 1
    assert times['second_look']['chunks'] == 2 and load_model(str(out / 'model')).second_look


def test_stop_at_ends_a_stage_after_one_step_with_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    cache = tmp_path / 'cache'
    cache.mkdir()
    torch.save(build_shard(get_config('tiny-random'), 'train', 0, 2), cache / 'shard-0.pt')
    values = dict(model='tiny-random', cache=str(cache), out=str(tmp_path / 's0'), steps=5,
                  accum=1, threads=1, ckpt_every=100, stop_at=1.0)  # long past
    run_stage(make_config(0, values))
    state = torch.load(tmp_path / 's0' / CHECKPOINT, weights_only=True)
    assert state['step'] == 1 and not (tmp_path / 's0' / 'model').exists()
    values['stop_at'] = 0.0
    run_stage(make_config(0, values), resume=True)
    assert (tmp_path / 's0' / 'model' / 'config.json').is_file()


def test_segcap_tiny_knows_the_varied_world_words():
    """The recipe's architecture has the varied world's classes and colours, in order."""
    assert VARIED_CLASSES == VOCAB.class_names and VARIED_COLOURS == VOCAB.colours
    assert read_recipe(RECIPE)['stage0']['model'] == 'segcap-tiny'
    config = get_config('segcap-tiny')
    assert config.class_names == VARIED_CLASSES and config.colour_names == VARIED_COLOURS
    assert model_vocab(config) == VOCAB


def test_a_varied_cache_uses_the_world_classes_and_the_model_words():
    torch.manual_seed(0)
    scenes = build_shard(get_config('tiny-random'), 'train', 0, 4, world='varied')
    classes = torch.cat([s.pan_classes for s in scenes]).tolist()
    assert set(classes) <= set(range(len(VARIED_CLASSES)))
    assert max(classes) >= 11  # kinds the default world does not have (jar, plate, ...)
    absent = [a for s in scenes for a in simple_absent(s, 2, VOCAB)]
    assert len(absent) == 8
    for a in absent:  # 'There is no <colour> <kind> in this image.' in the model's words
        colour, kind = a.answer.split()[3:5]
        assert colour in VOCAB.colours and kind in VOCAB.kinds and not a.masks.shape[0]


def test_a_second_run_of_a_stage_continues_from_the_first_and_ends_at_end_step(tmp_path):
    """stage0b.json runs stage 0 again from stage0's model; stage1 then starts from stage0b.
    end_step ends a run early while its learning-rate schedule still spans `steps`."""
    recipe = _tiny_recipe(tmp_path)
    (recipe / 'stage0b.json').write_text(json.dumps(dict(steps=4, end_step=2, accum=1,
                                                         threads=1, ckpt_every=1)))
    (recipe / 'stage3.json').write_text('{}')  # not a stage: ignored
    out = tmp_path / 'run'
    steps = read_recipe(recipe)
    assert list(steps) == ['cache', 'stage0', 'stage0b', 'stage1', 'stage2', 'second_look']
    todo = {name: argv for name, argv, _ in commands(steps, out)}
    assert todo['stage0b'][:3] == ['training.train', '--stage', '0']
    assert f'--init={out / "stage0" / "model"}' in todo['stage0b']
    assert f'--init={out / "stage0b" / "model"}' in todo['stage1']
    assert run_recipe(recipe, out)
    state = torch.load(out / 'stage0b' / CHECKPOINT, weights_only=True)
    assert state['step'] == 2 and (out / 'stage0b' / 'model' / 'config.json').is_file()
    lrs = [float(line.split(',')[1]) for line in
           (out / 'stage0b' / 'metrics.csv').read_text().splitlines()[1:]]
    assert len(lrs) == 2 and lrs[-1] > 0.5 * 1e-4, 'the schedule spans 4 steps, not 2'
