"""scripts/benchmark.py prints one valid JSON record; scripts/official_reference.py executes the
official structure (per-slot loops, six generator calls a pass) with the same numbers as ours."""
import json
import os
import subprocess
import sys
import tempfile

import pytest
import torch

from models import create_model, networks
from models.official_convert import convert_official_state_dict
from options.train_options import TrainOptions
from scripts.benchmark import (build_insta_gan, live_peak_mb, markdown_table, parse_args, sweep_configs,
                               synthetic_instance_batch, to_argv)
from scripts.official_reference import (OfficialStructureInstaGAN, PerSlotSetDiscriminator,
                                        PerSlotSetGenerator)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def set_input_tensor(n_filled, n_slots, size=32, seed=0):
    """(1, 3 + n_slots, size, size): random image, ``n_filled`` rectangle masks, then empty slots."""
    batch = synthetic_instance_batch(1, size, n_filled, n_slots, seed)
    return torch.cat([batch['A'], batch['A_segs']], 1)


def count_calls(module):
    calls = []
    module.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    return calls


def test_benchmark_prints_one_json_line_with_speed_and_memory(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'scripts', 'benchmark.py'), '--model', 'insta_gan', '--device', 'cpu',
         '--crop_size', '32', '--ngf', '4', '--batch_size', '2', '--ins_max', '2', '--ins_per', '1',
         '--iters', '2', '--warmup', '1', '--threads', '1'],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout
    rec = json.loads(lines[0])
    assert rec['device'] == 'cpu' and rec['impl'] == 'ours'
    assert rec['s_per_iter'] > 0 and len(rec['s_per_iter_all']) == 2
    assert rec['samples_per_s'] == pytest.approx(2 / rec['s_per_iter'])
    assert rec['test_images_per_s'] == pytest.approx(2 / rec['test_s_per_iter'])
    assert rec['peak_mem_mb'] > 0 and rec['peak_rss_mb'] > rec['peak_mem_mb']
    assert rec['options']['batch_size'] == 2 and rec['options']['ins_per'] == 1 and rec['options']['crop_size'] == 32
    assert len(rec['loadavg_1_5_15']) == 3


def test_benchmark_nproc_trains_in_two_ddp_processes(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'scripts', 'benchmark.py'), '--model', 'insta_gan', '--device', 'cpu',
         '--crop_size', '32', '--ngf', '4', '--batch_size', '1', '--ins_max', '2', '--ins_per', '1',
         '--iters', '2', '--warmup', '1', '--phase', 'train', '--nproc', '2', '--n_blocks', '1'],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = json.loads([ln for ln in proc.stdout.splitlines() if ln.strip()][-1])
    assert rec['nproc'] == 2 and rec['threads'] == max(1, os.cpu_count() // 2)
    assert rec['samples_per_s'] == pytest.approx(2 * rec['samples_per_s_per_process'])
    assert rec['samples_per_s_per_process'] == pytest.approx(1 / rec['s_per_iter'])


def test_per_slot_generator_equals_batched_generator_at_batch_1():
    torch.manual_seed(0)
    net = networks.define_G(3, 3, 4, 'set', norm='instance')
    inp = set_input_tensor(n_filled=3, n_slots=4)
    seg_calls = count_calls(net.encoder_seg)
    with torch.no_grad():
        ours = net(inp)
        assert seg_calls == [3]                       # ours: the three masks in one call
        seg_calls.clear()
        per_slot = PerSlotSetGenerator(net)(inp)
    assert seg_calls == [1, 1, 1]                     # official structure: one call per filled slot
    assert torch.allclose(per_slot, ours, atol=1e-5)  # float rounding: sums run in another order
    assert torch.equal(per_slot[:, 6], inp[:, 6])     # the empty slot passes through
    assert (per_slot[:, 3:6] != inp[:, 3:6]).any()    # the filled ones are translated


def test_per_slot_discriminator_equals_batched_discriminator_in_eval():
    torch.manual_seed(0)
    net = networks.define_D(3, 4, 'set', 3, norm='instance').eval()   # eval: no power-iteration step
    inp = set_input_tensor(n_filled=2, n_slots=3)
    with torch.no_grad():
        assert torch.allclose(PerSlotSetDiscriminator(net)(inp), net(inp), atol=1e-6)


def test_per_slot_generator_reproduces_the_official_generator_output(instagan_fixture_dir):
    fix = instagan_fixture_dir
    case = torch.load(os.path.join(fix, 'case.pth'), weights_only=True)
    net = networks.define_G(3, 3, 8, 'set', norm='instance').eval()
    state = torch.load(os.path.join(fix, '10_net_G_A.pth'), weights_only=True)
    net.load_state_dict(convert_official_state_dict(state, net))
    with torch.no_grad():
        out = PerSlotSetGenerator(net)(case['inputs']['real_A'])
    assert torch.allclose(out, case['outputs']['G_A_out'], atol=1e-5)


def test_official_structure_makes_six_generator_calls_a_pass_where_ours_makes_three(tmp_path):
    opt = TrainOptions(['--model', 'insta_gan', '--dataroot', 'x', '--checkpoints_dir', str(tmp_path),
                        '--ngf', '4', '--ndf', '4', '--crop_size', '32', '--gpu_ids', '-1',
                        '--ins_max', '4', '--ins_per', '2']).parse(save=False)
    torch.manual_seed(0)
    model = create_model(opt)
    batch = synthetic_instance_batch(1, 32, 4, 4, seed=1)
    calls_A, calls_B = count_calls(model.netG_A), count_calls(model.netG_B)
    model.set_input(batch)
    model.optimize_parameters()
    assert len(calls_A) + len(calls_B) == 2 * 3          # 2 passes, calls fused per generator
    assert sorted(calls_A + calls_B) == [1, 1, 2, 2, 3, 3]
    ref = OfficialStructureInstaGAN(model)
    calls_A, calls_B = count_calls(ref.G_A), count_calls(ref.G_B)
    ref.set_input(batch)
    before = [p.detach().clone() for p in model.netG_A.parameters()]
    ref.optimize_parameters()
    assert calls_A + calls_B == [1] * 12                 # 2 passes x 6 separate batch-1 calls
    assert any(not torch.equal(b, p) for b, p in zip(before, model.netG_A.parameters()))   # G stepped
    with pytest.raises(ValueError, match='batch size 1'):
        ref.set_input(synthetic_instance_batch(2, 32, 4, 4))


def test_shift_sum_sweep_times_the_output_layer_with_and_without_its_fast_path():
    args = parse_args(['--sweep', 'shift_sum', '--crop_size', '32'])
    (_, on), (_, off) = sweep_configs(args)
    assert '--no_shift_sum' not in to_argv(args, **on) and '--no_shift_sum' in to_argv(args, **off)
    net = networks.define_G(3, 3, 4, 'set', norm='instance', n_blocks=1)
    assert net.decoder_seg[-2].use_shift_sum
    PerSlotSetGenerator(net)                            # timed as the official code: path off
    assert not net.decoder_seg[-2].use_shift_sum


def test_speedup_sweep_compares_each_batch_size_with_the_official_structure_round_by_round():
    args = parse_args(['--sweep', 'speedup', '--sweep_values', '1,4'])
    configs = sweep_configs(args)
    assert [o for _, o in configs] == [{'impl': 'official', 'batch_size': 1}, {'impl': 'ours', 'batch_size': 1},
                                       {'impl': 'ours', 'batch_size': 4}]
    assert '--impl official' in ' '.join(to_argv(args, **configs[0][1]))

    def rec(impl, batch, s_per_iter, load):
        return {'impl': impl, 'options': {'batch_size': batch}, 's_per_iter': s_per_iter,
                'samples_per_s': batch / s_per_iter, 'cpu_s_per_iter': 2 * s_per_iter, 'loadavg_1_5_15': [load]}
    # round 2 ran on a slower host: every configuration took twice as long, so the ratio is unchanged
    rows = [('official', [rec('official', 1, 1.0, 1), rec('official', 1, 2.0, 2), rec('official', 1, 1.0, 1)]),
            ('ours b4', [rec('ours', 4, 2.0, 1), rec('ours', 4, 4.0, 2), {'error': 'killed'}])]
    table = markdown_table(rows).splitlines()
    assert table[0].endswith('x official (per round) |')
    assert table[2].endswith(' 1.00 |') and table[3].endswith(' 2.00 |')
    assert '| 2/3 |' in table[3]
    assert 'x official' not in markdown_table(rows[1:])


def test_vs_official_alternates_both_in_one_process_and_reports_the_per_pair_speedup(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'scripts', 'benchmark.py'), '--vs_official', '--device', 'cpu',
         '--crop_size', '32', '--ngf', '4', '--batch_size', '2', '--iters', '3', '--warmup', '1', '--threads', '1',
         '--n_blocks', '1', '--amp', 'bf16', '--official_amp', 'none'],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = json.loads([ln for ln in proc.stdout.splitlines() if ln.strip()][-1])
    assert rec['vs_official'] and rec['options']['batch_size'] == 2 and rec['options']['amp'] == 'bf16'
    assert rec['official_amp'] == 'none'
    ours, official = rec['s_per_iter_all'], rec['official_s_per_iter_all']
    assert len(ours) == len(official) == 3
    per_pair = sorted(2 * o / u for u, o in zip(ours, official))
    assert rec['speedup'] == pytest.approx(per_pair[1], rel=1e-3)      # median of the 3 pairs
    assert rec['speedup_min'] == pytest.approx(per_pair[0], rel=1e-3)
    assert rec['samples_per_s'] == pytest.approx(2 / rec['s_per_iter'])
    bad = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'benchmark.py'), '--vs_official',
                          '--model', 'alphagan'], capture_output=True, text=True, cwd=str(tmp_path), timeout=60)
    assert bad.returncode == 2 and '--vs_official' in bad.stderr


def test_live_peak_counts_what_is_allocated_at_once():
    def fn():
        a = torch.empty(2 ** 20)                 # 4 MiB
        b = torch.empty(2 ** 21)                 # 8 MiB: 12 MiB live
        del a, b
        c = torch.empty(2 ** 21)                 # 8 MiB after the frees: the peak stays 12
        del c
    assert live_peak_mb(fn) == pytest.approx(12, abs=0.1)


def test_sequential_translation_memory_stays_flat_in_the_number_of_instances():
    """Peak live tensor memory of a training step at ins_max 8 is within 10% of ins_max 2 (ins_per 2).
    Without freeing each pass's gradients after its step they stay alive through the next pass's
    forward, and this grows by 13% at this size."""
    peaks = {}
    for ins_max in (2, 8):
        args = parse_args(['--crop_size', '32', '--ngf', '8', '--ins_max', str(ins_max), '--ins_per', '2',
                           '--n_blocks', '2'])
        with tempfile.TemporaryDirectory() as tmp:
            stepper, model, batch, _ = build_insta_gan(args, torch.device('cpu'), tmp)
            stepper.set_input(batch)
            stepper.optimize_parameters()
            peaks[ins_max] = live_peak_mb(stepper.optimize_parameters)
            assert all(p.grad is None for _, net in model.nets() for p in net.parameters())
    assert peaks[8] < 1.10 * peaks[2], peaks


def test_dim_sweep_times_stage_1_and_3_training_and_stage_3_inference_per_megapixel():
    args = parse_args(['--sweep', 'dim', '--device', 'cpu'])
    configs = dict(sweep_configs(args))
    assert [c['dim_stage'] for c in configs.values()] == [1, 3, 3]
    assert [c['phase'] for c in configs.values()] == ['train', 'train', 'test']
    assert all(c['model'] == 'dim' and c['batch_size'] == 1 for c in configs.values())
    argv = to_argv(args, **configs['dim train (stage 3)'])
    assert argv[argv.index('--dim_stage') + 1] == '3' and argv[argv.index('--crop_size') + 1] == '320'
    one = parse_args(['--model', 'dim', '--device', 'cpu'])
    assert (one.crop_size, one.test_size) == (320, 1024)


def _fake_peer(root):
    """A stand-in checkout of the peer (CDOTAD/AlphaGAN-Matting layout: model/Encoder.py and
    model/Decoder.py, ``Encoder(BatchNorm)`` returning what ``Decoder`` takes), tiny and local."""
    (root / 'model').mkdir()
    (root / 'model' / '__init__.py').write_text('')
    (root / 'model' / 'Encoder.py').write_text(
        'from torch import nn\n'
        'class Encoder(nn.Module):\n'
        '    def __init__(self, BatchNorm):\n'
        '        super().__init__()\n'
        '        self.conv = nn.Conv2d(4, 32, 3, padding=1)\n'
        '        self.norm = BatchNorm(32)\n'
        '    def forward(self, x):\n'
        '        return self.norm(self.conv(x)), x\n')
    (root / 'model' / 'Decoder.py').write_text(
        'import torch\n'
        'from torch import nn\n'
        'class Decoder(nn.Module):\n'
        '    def __init__(self, BatchNorm):\n'
        '        super().__init__()\n'
        '        self.conv = nn.Conv2d(32, 1, 3, padding=1)\n'
        '    def forward(self, x):\n'
        '        return torch.sigmoid(self.conv(x[0]))\n')
    return root


def test_matting_inference_sweep_has_the_issue_rows_and_peer_rows_with_a_peer(tmp_path):
    args = parse_args(['--sweep', 'matting_inference', '--device', 'cpu'])
    labels = [label for label, _ in sweep_configs(args)]
    assert labels == [f'{m} {row}' for m in ('alphagan', 'dim') for row in (
        '320 px none', '320 px bf16', '1024 px none', '1024 px bf16', '4000x3000 tile 1024/64 none')]
    for model in ('alphagan', 'dim'):
        tiled = dict(sweep_configs(args))[f'{model} 4000x3000 tile 1024/64 none']
        argv = to_argv(args, **tiled)
        assert argv[argv.index('--tile') + 1] == '1024' and argv[argv.index('--test_width') + 1] == '4000'
        assert argv[argv.index('--model') + 1] == model
    dim = parse_args(to_argv(args, **dict(sweep_configs(args))['dim 1024 px none']))
    assert dim.model == 'dim' and dim.dim_stage == 3 and dim.test_size == 1024
    peer = _fake_peer(tmp_path)
    args = parse_args(['--sweep', 'matting_inference', '--device', 'cpu', '--peer', str(peer)])
    assert [label for label, _ in sweep_configs(args)][-2:] == ['peer 320 px none', 'peer 1024 px none']
    with pytest.raises(SystemExit):
        parse_args(['--vs_peer', str(tmp_path / 'nowhere')])


def test_vs_peer_times_ours_folded_reference_and_peer_in_one_process(tmp_path):
    peer = _fake_peer(tmp_path)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'scripts', 'benchmark.py'), '--vs_peer', str(peer), '--device', 'cpu',
         '--test_size', '64', '--iters', '1', '--warmup', '0', '--threads', '1'],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = json.loads([ln for ln in proc.stdout.splitlines() if ln.strip()][-1])
    assert rec['vs_peer'] and rec['size'] == [64, 64]
    assert rec['max_abs_diff_vs_reference'] <= 1e-5
    assert rec['folded_max_abs_diff_vs_reference'] <= 1e-5
    assert all(rec[f'{k}_s_per_megapixel'] > 0 for k in ('peer', 'reference', 'folded', 'ours'))
    assert rec['speedup_vs_peer'] > 0 and rec['speedup_vs_reference'] > 0
