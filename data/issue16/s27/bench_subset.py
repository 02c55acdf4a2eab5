# session 27 review: subset_energies with the set sorted once against the committed loop (sorted again per lookup); one thread
# OMP_NUM_THREADS=1 .venv/bin/python data/issue16/s27/bench_subset.py
import time, torch, json
from pathlib import Path
from nqs.excitations import IntegralHamiltonian, connections
from nqs.exact import subset_energies
from nqs.keys import index_of, pack
from nqs.target_states import target_state
from nqs.training.build import build_cfg_problem
from nqs.training.config import load_yaml, resolve
torch.set_num_threads(1)
run = Path("runs/s22/cap-s25-w1024-c")
cfg = resolve([("run", {k: v for k, v in load_yaml(run / "config.yaml").items() if k not in ("init_state", "out", "init_from")})])
p = build_cfg_problem(cfg)
t = target_state("dmrg", p.integrals, 250, 1e-5, 1)
bits, c = t.bits, t.amplitudes.double().to(torch.complex128)
h = IntegralHamiltonian(p.integrals, p.sector.n_alpha, p.sector.n_beta)
def old(rows):  # the loop as committed in 116d51d: the table sorted again by every lookup
    table = pack(bits); num = 0
    for s in range(*rows, 256):
        x = slice(s, min(rows[1], s + 256))
        d, sm, k, e = connections(h, bits[x], keep=lambda q: index_of(table, q) >= 0)
        y = index_of(table, k)
        num = num + (c[x].abs() ** 2 * d).sum() + (c[x][sm].conj() * e * c[y]).sum()
    return num
for rows in [(0, 2048), (600000, 602048)]:
    t0 = time.perf_counter(); a = old(rows); t1 = time.perf_counter()
    b = subset_energies(h, bits, c, rows=rows)[0][0]; t2 = time.perf_counter()
    print(json.dumps({"rows": rows, "old_s": round(t1 - t0, 2), "new_s": round(t2 - t1, 2), "ratio": round((t1 - t0) / (t2 - t1), 2), "diff_Ha": abs(complex(a) - complex(b))}))
