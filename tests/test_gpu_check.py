"""scripts/gpu_check.py: the prepared GPU check keeps working on the CPU (``--cpu_smoke``)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from scripts import gpu_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(tmp_path, *args):
    out = tmp_path / 'check.json'
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'gpu_check.py'), '--cpu_smoke',
                           '--out', str(out), '--data', str(tmp_path / 'data'), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})
    report = json.loads(out.read_text()) if out.exists() else None
    return proc, report


def test_cpu_smoke_runs_every_section_and_writes_one_json(tmp_path):
    proc, report = run_script(tmp_path, '--precisions', 'none')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report['mode'] == 'cpu_smoke' and report['ok']
    assert json.loads(proc.stdout) == report                   # printed as written
    sections = report['sections']
    assert list(sections) == list(gpu_check.SECTIONS)
    rows = sections['train_steps']['result']
    assert [r['row'] for r in rows] == [label for label, *_ in gpu_check.TRAIN_ROWS]
    for r in rows:
        assert r['ok'] and r['conv_dtype'] == 'float32' and r['s_step'] > 0, r
        assert r['losses'] and all(abs(v) < 1e6 for v in r['losses'].values()), r
    inference = sections['matting_inference']['result']
    assert {r['model'] for r in inference} == {'alphagan', 'dim'}
    assert {r['amp'] for r in inference if r['model'] == 'alphagan'} == {'none', 'bf16'}
    assert any('tile' in r['size'] for r in inference) and any(r['size'].startswith('HD') for r in inference)
    assert all(r['s_per_image'] > 0 for r in inference)
    bgm = sections['bgmv2']['result']
    assert {(r['mode'], r['amp']) for r in bgm} == {(m, a) for m in ('full', 'sampling') for a in ('none', 'bf16')}
    assert all(r['fps'] > 0 for r in bgm)
    assert sections['vs_official']['result']['speedup'] > 0


def test_mixed_precision_steps_run_in_their_precision(tmp_path):
    proc, report = run_script(tmp_path, '--sections', 'train_steps', '--models', 'insta_gan,bgmv2',
                              '--precisions', 'bf16,fp16')
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = report['sections']['train_steps']['result']
    assert len(rows) == 3 * 2
    for r in rows:
        assert r['ok'], r
        assert r['conv_dtype'] == {'bf16': 'bfloat16', 'fp16': 'float16'}[r['amp']]
        # fp16 runs through a GradScaler (one per optimizer); bf16 needs none
        assert bool(r['grad_scales']) == (r['amp'] == 'fp16'), r


def test_a_row_whose_weights_do_not_change_fails(tmp_path):
    data = gpu_check.make_data(str(tmp_path / 'data'), smoke=True)
    row = gpu_check.train_step_row('cycle_gan', 'cycle_gan', ['--lr', '0'], data['shapes'], 'none',
                                   torch.device('cpu'), gpu_check.Sizes(True), str(tmp_path / 'ck'))
    assert not row['ok']
    assert any('unchanged' in p for p in row['problems']), row['problems']


def test_a_failing_section_is_recorded_and_the_next_one_runs(tmp_path, monkeypatch):
    def broken(ctx):
        raise RuntimeError('CUDA error: an illegal memory access was encountered')
    monkeypatch.setattr(gpu_check, 'make_data', lambda root, smoke: {})
    monkeypatch.setattr(gpu_check, 'RUNNERS', {**gpu_check.RUNNERS, 'train_steps': broken,
                                               'vs_official': lambda ctx: {'speedup': 2.0}})
    out = tmp_path / 'check.json'
    assert gpu_check.main(['--cpu_smoke', '--sections', 'train_steps,vs_official', '--out', str(out)]) == 1
    report = json.loads(out.read_text())
    assert not report['ok']
    assert not report['sections']['train_steps']['ok']
    assert 'illegal memory access' in report['sections']['train_steps']['error']
    assert report['sections']['vs_official'] == {'ok': True, 'result': {'speedup': 2.0},
                                                 'seconds': report['sections']['vs_official']['seconds']}


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has CUDA: the GPU mode would run')
def test_without_cuda_it_asks_for_cpu_smoke(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        gpu_check.main(['--out', str(tmp_path / 'x.json')])
    assert e.value.code == 2
    assert '--cpu_smoke' in capsys.readouterr().err
    assert not (tmp_path / 'x.json').exists()


def test_unknown_section_or_model_is_refused(capsys):
    for argv in (['--cpu_smoke', '--sections', 'train_step'], ['--cpu_smoke', '--models', 'alphagann']):
        with pytest.raises(SystemExit) as e:
            gpu_check.main(argv)
        assert e.value.code == 2
    assert 'alphagann' in capsys.readouterr().err
