# session 26: a stratified batch of H16's DMRG state drawn by a new sampler each time vs by one kept sampler (one thread)
#   OMP_NUM_THREADS=1 .venv/bin/python data/issue16/s26/sampler_draw.py
import json, time, numpy as np, torch
torch.set_num_threads(1)
from nqs.pretrain import StratifiedSampler, stratified_batch
from nqs.target_states import TargetState
z = np.load('/root/.cache/nqs-scaling/hamiltonians/states/dmrg-be8e9d353e41260fc4582e74.npz')
t = TargetState(torch.from_numpy(z['bits']), torch.from_numpy(z['amplitudes']), 0.0, 'dmrg')
for size in (4096, 16384):
    t0 = time.perf_counter(); [stratified_batch(t, size) for _ in range(10)]; once = (time.perf_counter() - t0) / 10
    s = StratifiedSampler(t, size)
    t0 = time.perf_counter(); [s.draw() for _ in range(10)]; kept = (time.perf_counter() - t0) / 10
    print(json.dumps({"size": size, "new_sampler_each_draw_ms": 1e3 * once, "kept_sampler_ms": 1e3 * kept, "ratio": once / kept}))
