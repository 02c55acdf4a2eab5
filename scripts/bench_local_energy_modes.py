"""Local-energy modes (issue 15): step time, FLOPs, bias and spread against exact, and short training runs.

    .venv/bin/python scripts/bench_local_energy_modes.py --parts speed --molecules H2O N2 CH4 --json speed.jsonl
    .venv/bin/python scripts/bench_local_energy_modes.py --parts train --molecules H2O N2 --merge speed.jsonl \\
        --train-steps 300 --runs-dir runs/bench_le_modes

Modes: exact-dense (the path before issue 15), exact-trie, sampled, semi-stochastic (`--semi T K`: threshold on
w_x |H_xx'| in Hartree, draws per sample; several operating points may be given, each a row `semi-stochastic`),
heat-bath (`--heat-bath T K`, the same split without enumerating the doubles, on the integral connections);
`--modes` keeps only the named ones; `--redraws 0` skips the exact reference (bias and spread null: for sizes
where the exact local energy is too slow to run each step).

speed (one torch thread): per (molecule, ansatz) a fresh default model (seed 0, random initialisation) is
trained from step 0 by each mode in turn with the step `nqs-train` runs (`vmc_step` + `optimisation_step`,
N_s = 1e12, cap `--unique`, the default annealing); after `--warmup` steps, `--steps` steps are timed.
`s_per_step` = median of sampling + local energy + loss/backward/optimiser; `s_local_energy` its local-energy
part; `network_flops` = mean model-counted FLOPs of the local energy's network evaluations (ψ of the distinct
connected configurations; 0 for sampled, which reuses the loss's forward pass), `le_flops` with the
Hamiltonian kernel's GEMMs, `step_flops` the whole step; `psi_evals` the mean distinct configurations
evaluated. On every timed step's samples the exact estimator (exact-trie, untimed) gives E_exact; `bias_mha`
and `std_mha` are the mean and the standard deviation over the timed steps (and, for semi-stochastic, over
`--redraws` draws on each step's samples) of E_mode - E_exact, in mHa: early training from a random
initialisation.

train: `nqs.training.run.run` with the defaults, `--train-steps` steps and each mode (same seed, same
budget); `final_error_mha` is the run's final energy (always the exact estimator, fresh sample) minus FCI.
On the trained model, `trained_bias_mha` / `trained_std_mha` are E_mode - E_exact on `--redraws` fresh
samples (cap `--unique`). Runs already finished in `--runs-dir` are read back (resumable).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nqs import flops as flop_model  # noqa: E402
from nqs.cli.common import configure_process  # noqa: E402
from nqs.local_energy_modes import SEMI_STOCHASTIC, LocalEnergyMode, estimate  # noqa: E402
from nqs.record import read_summary  # noqa: E402
from nqs.sampler import sample  # noqa: E402
from nqs.tables import markdown_table  # noqa: E402
from nqs.training.build import build  # noqa: E402
from nqs.training.config import TrainConfig  # noqa: E402
from nqs.training.module import make_optimizer, optimisation_step, step_seed  # noqa: E402
from nqs.training.run import run  # noqa: E402
from nqs.vmc import vmc_step  # noqa: E402

EXACT = LocalEnergyMode("exact-trie")


def modes(ansatz: str, semi: list[tuple[float, int]], heat_bath: list[tuple[float, int]],
          keep: list[str] | None) -> list[LocalEnergyMode]:
    out = [LocalEnergyMode("exact-dense")]
    if ansatz != "made":
        out.append(EXACT)
    out.append(LocalEnergyMode("sampled"))
    out += [LocalEnergyMode("semi-stochastic", t, k) for t, k in semi]
    out += [LocalEnergyMode("heat-bath", t, k) for t, k in heat_bath]
    return [m for m in out if keep is None or m.name in keep]


def weighted_energy(values: torch.Tensor, counts: torch.Tensor) -> float:
    w = counts / counts.sum()
    return float((w * values.real).sum())


def exact_reference(model, h, samples) -> float:
    ref = EXACT if model.__class__.__name__.lower() != "made" else LocalEnergyMode("exact-dense")
    return weighted_energy(estimate(model, h, samples.bits, ref).values, samples.counts)


def mode_energies(model, h, samples, mode, gen, redraws: int) -> list[float]:
    """E of `mode` on fixed samples: one value, or `redraws` for the semi-stochastic estimator."""
    with torch.no_grad():
        log_psi = model.log_psi(samples.bits) if mode.reuses_sample_log_psi else None
    n = redraws if mode.name in SEMI_STOCHASTIC else 1
    weights = samples.counts / samples.counts.sum()
    return [weighted_energy(estimate(model, h, samples.bits, mode, gen, log_psi_bits=log_psi, weights=weights).values,
                            samples.counts) for _ in range(n)]


def spread(diffs: list[float]) -> tuple[float, float]:
    return 1e3 * statistics.fmean(diffs), 1e3 * (statistics.stdev(diffs) if len(diffs) > 1 else 0.0)


def speed(cfg: TrainConfig, problem, model0, mode: LocalEnergyMode, args) -> dict:
    h = problem.compiled("cpu", connections="integrals" if mode.name == "heat-bath" else "auto")
    model = copy.deepcopy(model0)
    opt, sched = make_optimizer(model, cfg)
    times, le_times, net, le, step, evals, diffs = [], [], [], [], [], [], []
    for k in range(args.warmup + args.steps):
        gen = torch.Generator().manual_seed(step_seed(cfg.run.seed, k))
        r = vmc_step(model, h, args.samples, args.unique, gen, temperature=cfg.temperature(k),
                     eval_chunk=cfg.optim.eval_chunk, mode=mode)
        t_backward, t_optimizer, _ = optimisation_step(r.loss, opt, sched, cfg.optim.grad_clip, torch.device("cpu"))
        if k < args.warmup:
            continue
        times.append(r.t_sampling + r.t_local_energy + r.t_loss + t_backward + t_optimizer)
        le_times.append(r.t_local_energy)
        fl = flop_model.local_energy_flops(cfg.model, problem.sector, r.n_evals, r.samples.n_unique,
                                           h.gemm_columns, r.le_rows)
        net.append(fl["psi"])
        le.append(fl["total"])
        step.append(flop_model.step_flops(cfg.model, problem.sector, r.samples.rows_per_position, r.n_evals,
                                          r.samples.n_unique, h.gemm_columns, r.le_rows)["total"])
        evals.append(r.n_evals)
        if args.redraws:
            with torch.no_grad():  # untimed: the exact estimator on the same samples (the model after this step)
                e_exact = exact_reference(model, h, r.samples)
                extra = mode_energies(model, h, r.samples, mode, gen, args.redraws)
            diffs += [e - e_exact for e in extra]
    bias, std = spread(diffs) if diffs else (None, None)
    return {"s_per_step": statistics.median(times), "s_local_energy": statistics.median(le_times),
            "network_flops": statistics.fmean(net), "le_flops": statistics.fmean(le),
            "step_flops": statistics.fmean(step), "psi_evals": statistics.fmean(evals), "bias_mha": bias,
            "std_mha": std}


def train(cfg: TrainConfig, mode: LocalEnergyMode, args, molecule: str) -> dict:
    tag = {"semi-stochastic": f"semi-{mode.threshold:g}-{mode.draws}",
           "heat-bath": f"hb-{mode.threshold:g}-{mode.draws}"}.get(mode.name, mode.name)
    out = Path(args.runs_dir) / f"{molecule}-{cfg.model.ansatz}-{tag}"
    run_cfg = cfg.updated(steps=args.train_steps, local_energy=mode.name, semi_threshold=mode.threshold,
                          semi_draws=mode.draws, progress=False, out=str(out), checkpoint_every=10**6)
    if not (out / "summary.json").is_file():
        run(run_cfg, out=out)
    summary = read_summary(out)
    problem, model = build(cfg.updated(init_from=str(out)))
    h = problem.compiled("cpu")
    diffs = []
    for k in range(args.redraws):
        gen = torch.Generator().manual_seed(step_seed(cfg.run.seed, 10**8 + k))
        samples = sample(model, args.samples, args.unique, gen)
        with torch.no_grad():
            e_exact = exact_reference(model, h, samples)
            diffs += [e - e_exact for e in mode_energies(model, h, samples, mode, gen, 1)]
    bias, std = spread(diffs)
    return {"train_steps": summary.steps, "final_error_mha": summary.error_mha, "train_wall_s": summary.wall_s,
            "train_flops": summary.flops_total, "trained_bias_mha": bias, "trained_std_mha": std}


def key(row: dict) -> tuple:
    return row["molecule"], row["ansatz"], row["mode"], row.get("threshold"), row.get("draws")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=("speed", "train"), default=["speed"])
    parser.add_argument("--molecules", nargs="+", default=["H2O", "N2", "CH4"])
    parser.add_argument("--ansatze", nargs="+", default=["transformer", "retnet"])
    parser.add_argument("--semi", nargs=2, action="append", type=float, metavar=("THRESHOLD", "DRAWS"),
                        help="semi-stochastic operating point (repeatable; default 1e-4 4 and 1e-3 2)")
    parser.add_argument("--heat-bath", nargs=2, action="append", type=float, metavar=("THRESHOLD", "DRAWS"),
                        help="heat-bath operating point (repeatable; default none)")
    parser.add_argument("--modes", nargs="+", help="keep only these modes (e.g. semi-stochastic heat-bath)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--samples", type=float, default=1e12)
    parser.add_argument("--unique", type=int, default=2000)
    parser.add_argument("--redraws", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--runs-dir", default="runs/bench_le_modes")
    parser.add_argument("--json", help="also write the JSON lines to this file")
    parser.add_argument("--merge", help="JSON lines of an earlier --parts speed run to merge the training into")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    semi = [(t, int(k)) for t, k in (args.semi or [(1e-4, 4), (1e-3, 2)])]
    heat_bath = [(t, int(k)) for t, k in (args.heat_bath or [])]
    configure_process(args.threads)
    merged = {}
    if args.merge:
        for line in Path(args.merge).read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                merged[key(row)] = row
    rows = []
    for molecule in args.molecules:
        for ansatz in args.ansatze:
            cfg = TrainConfig().updated(mol=molecule, ansatz=ansatz, samples=args.samples, unique=args.unique,
                                        threads=args.threads, fci_max_dets=1e6)
            problem, model0 = build(cfg) if "speed" in args.parts else (None, None)
            for mode in modes(ansatz, semi, heat_bath, args.modes):
                row = {"molecule": molecule, "ansatz": ansatz, "mode": mode.name}
                if mode.name in SEMI_STOCHASTIC:
                    row.update(threshold=mode.threshold, draws=mode.draws)
                row = {**merged.get(key(row), {}), **row}
                if "speed" in args.parts:
                    row.update(speed(cfg, problem, model0, mode, args), n_unique_cap=args.unique,
                               steps_timed=args.steps, threads=torch.get_num_threads())
                if "train" in args.parts:
                    row.update(train(cfg, mode, args, molecule))
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.json:
        Path(args.json).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print()
    print(table(rows))


def table(rows: list[dict]) -> str:
    def f(row, k, fmt):
        return "—" if row.get(k) is None else format(row[k], fmt)

    base = {(r["molecule"], r["ansatz"]): r for r in rows if r["mode"] == "exact-dense"}
    out = []
    for r in rows:
        b = base.get((r["molecule"], r["ansatz"]), {})
        speedup = b["s_per_step"] / r["s_per_step"] if "s_per_step" in b and "s_per_step" in r else None
        cut = b["network_flops"] / r["network_flops"] if r.get("network_flops") and "network_flops" in b else None
        mode = r["mode"] + (f" ({r['threshold']:g}, {r['draws']})" if "threshold" in r else "")
        out.append([r["molecule"], r["ansatz"], mode, f(r, "s_per_step", ".4f"), f({"x": speedup}, "x", ".2f"),
                    f(r, "network_flops", ".3g"), f({"x": cut}, "x", ".2f"), f(r, "psi_evals", ",.0f"),
                    f(r, "bias_mha", "+.3f"), f(r, "std_mha", ".3f"), f(r, "final_error_mha", "+.3f"),
                    f(r, "trained_bias_mha", "+.3f"), f(r, "trained_std_mha", ".3f")])
    return markdown_table(["molecule", "ansatz", "mode", "s/step", "step speed-up", "network FLOPs", "FLOP cut",
                           "ψ evals", "bias mHa", "std mHa", "final error mHa", "trained bias mHa",
                           "trained std mHa"], out)


if __name__ == "__main__":
    main()
