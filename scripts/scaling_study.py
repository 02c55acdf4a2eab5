"""Tables of the scaling study's experiments (issue 14; docs/scaling.md) from their run directories.

    python scripts/scaling_study.py e1 [--root runs/sweeps]   # annealing protocol and learning rate per size
    python scripts/scaling_study.py e2 [--root runs/sweeps]   # does D' collapse? (N2: B x T_post)
    python scripts/scaling_study.py e2b [--root runs/sweeps]  # the sample count N_s at fixed B and T (N2)
    python scripts/scaling_study.py e3 [--root runs/sweeps]   # pooled-law grid: error per molecule, size, T_post
    python scripts/scaling_study.py e5 [--root runs/sweeps]   # modulus x phase sizes (NH3): error per cell
    python scripts/scaling_study.py e6 RUN_DIR...              # measured FLOPs per step vs the paper's uncached estimate

Each prints Markdown tables (errors in mHa, geometric means over seeds with the seeds listed) and, for e2, the
regression log L = c + a·log T_post + b·log B with a cluster bootstrap over (B, T_post) cells: D' = T·S_F
collapses the data if a = b (L depends on T·B only).
"""
from __future__ import annotations

import argparse
import collections
import math
import sys
from pathlib import Path

import numpy as np

from nqs.record import read_metrics
from nqs.scaling.archive import SUFFIX
from nqs.scaling.validate import pooled_sd
from nqs.scaling.runs import load_runs
from nqs.tables import markdown_table
from nqs.training.config import load_yaml, resolve


def _sweep(root: Path, name: str) -> Path | None:
    """The sweep `name` under `root`: its folder of runs, or its run archive (`name`.runs.jsonl.xz); None if absent."""
    for path in (root / name, root / f"{name}{SUFFIX}"):
        if path.exists():
            return path
    return None


def _cfg(rec):
    return resolve([(str(rec.path / "config.yaml"), load_yaml(rec.path / "config.yaml"))])


def _geo(values, digits: str = ".1f") -> str:
    vals = [v for v in values if v is not None and v > 0]
    if not vals:
        return "—"
    g = math.exp(np.mean(np.log(vals)))
    return f"{g:.2f} ({' / '.join(f'{v:{digits}}' for v in vals)})"


def seed_scatter(cells: dict) -> float:
    """Within-cell standard deviation of log L over the seeds (`nqs.scaling.validate.pooled_sd`: one degree of
    freedom per cell spent on its mean): the part of a law's log-residual no function of the cell's (N, D') can
    remove. Every run counts, those above HF too (nqs-fit leaves them out)."""
    sd, _ = pooled_sd([np.log(v) for v in cells.values()])
    return math.nan if sd is None else sd


def e1(root: Path) -> None:
    hf = None
    for sweep in ("e1_anneal", "e1_anneal_length"):
        if _sweep(root, sweep) is None:
            continue
        cells = collections.defaultdict(list)
        for r in load_runs([_sweep(root, sweep)]):
            c = _cfg(r)
            hf = abs(r.hf_error_mha)
            o = c.optim
            mode = ("none" if o.anneal_t0 == 0 else f"fixed {o.anneal_steps}" if o.anneal_steps
                    else f"fraction {o.anneal_fraction}")
            cells[(mode, c.model.d_model, o.steps)].append(r.abs_error_mha)
        modes = sorted({k[0] for k in cells})
        sizes = sorted({k[1] for k in cells})
        steps = sorted({k[2] for k in cells})
        rows = [[m, d] + [_geo(cells.get((m, d, t), [])) for t in steps] for m in modes for d in sizes]
        print(f"\n{sweep} (|E − E_FCI| mHa; HF is +{hf:.1f}):")
        print(markdown_table(["annealing", "d_model"] + [f"T = {t}" for t in steps], rows))
    if _sweep(root, "e1_lr") is not None:
        cells = collections.defaultdict(list)
        ns = {}
        for r in load_runs([_sweep(root, "e1_lr")]):
            c = _cfg(r)
            cells[(c.model.d_model, c.optim.lr)].append(r.abs_error_mha)
            ns[c.model.d_model] = r.n_params
        lrs = sorted({k[1] for k in cells})
        rows = []
        for d in sorted(ns):
            vals = [math.exp(np.mean(np.log(cells[(d, lr)]))) if cells.get((d, lr)) else math.inf for lr in lrs]
            rows.append([d, f"{ns[d]:,}"] + [_geo(cells.get((d, lr), [])) for lr in lrs] + [f"{lrs[int(np.argmin(vals))]:g}"])
        print("\ne1_lr (|E − E_FCI| mHa at T = 800):")
        print(markdown_table(["d_model", "N"] + [f"lr {lr:g}" for lr in lrs] + ["best lr"], rows))


def e2(root: Path, sweep: str = "e2_collapse", n_boot: int = 2000, seed: int = 0, plot: Path | None = None) -> None:
    recs = [r for r in load_runs([_sweep(root, sweep) or root / sweep]) if r.abs_error_mha]
    rows = []
    for r in recs:
        c = _cfg(r)
        start = c.optim.sr_from if c.optim.optimizer == "adam+sr" else (c.optim.anneal_steps or 0)
        t_post = c.optim.steps - start  # steps after annealing (Adam) or after the switch to SR
        rows.append((c.sampling.unique, t_post, r.seed, r.abs_error_mha, r.d_prime, r.d_from("nominal"),
                     r.vscore, abs(r.hf_error_mha)))
    caps = sorted({x[0] for x in rows})
    lens = sorted({x[1] for x in rows})
    cell = collections.defaultdict(list)
    for x in rows:
        cell[(x[0], x[1])].append(x)
    print(f"\n{sweep}: N2 |E − E_FCI| mHa (HF +{rows[0][7]:.1f}), geometric mean over seeds (seeds), and "
          "the nominal D' = T·B/|sector|:")
    print(markdown_table(["B \\ T_post"] + [str(t) for t in lens],
                         [[b] + [(_geo([x[3] for x in cell[(b, t)]]) + f"; D' {cell[(b, t)][0][5]:.0f}")
                                 if cell.get((b, t)) else "—" for t in lens] for b in caps]))
    y = np.log([x[3] for x in rows])
    X = np.column_stack([np.ones(len(rows)), np.log([x[1] for x in rows]), np.log([x[0] for x in rows])])
    keys = [(x[0], x[1]) for x in rows]
    uniq = sorted(set(keys))
    index = np.array([uniq.index(k) for k in keys])

    def coef(w):
        sw = np.sqrt(w)
        return np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)[0]

    best = coef(np.ones(len(rows)))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq))
        boots.append(coef(counts[index].astype(float)))
    boots = np.array(boots)
    lo, hi = np.percentile(boots, [2.5, 97.5], axis=0)
    dlo, dhi = np.percentile(boots[:, 1] - boots[:, 2], [2.5, 97.5])
    resid = y - X @ best
    print(f"\nlog L = c + a·log T_post + b·log B over {len(rows)} runs in {len(uniq)} cells "
          f"(95% cluster-bootstrap intervals, {n_boot} resamples):")
    print(f"  a (T_post) = {best[1]:.3f} [{lo[1]:.3f}, {hi[1]:.3f}]   b (B) = {best[2]:.3f} [{lo[2]:.3f}, {hi[2]:.3f}]   "
          f"a − b = {best[1] - best[2]:.3f} [{dlo:.3f}, {dhi:.3f}]   residual RMS {np.sqrt(np.mean(resid ** 2)):.3f}")
    print("  D' = T·B/|sector| collapses the data when a = b: "
          + ("consistent (the interval of a − b contains 0)" if dlo <= 0 <= dhi else "rejected (a − b excludes 0)"))
    if plot:
        plot_collapse(rows, caps, lens, plot, sweep)


def plot_collapse(rows, caps, lens, path: Path, sweep: str) -> None:
    """E2: |E − E_FCI| against the nominal D' = T·B/|sector|, colour = cap B, marker = T_post; a collapse puts
    every colour and marker on one curve."""
    from nqs.scaling.plots import pyplot, save

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(caps)))
    markers = "osD^v<>"
    for x in rows:
        ax.scatter(x[5], x[3], color=colours[caps.index(x[0])], marker=markers[lens.index(x[1]) % len(markers)], s=22)
    for b, c in zip(caps, colours):
        ax.scatter([], [], color=c, label=f"B = {b}")
    for t, m in zip(lens, markers):
        ax.scatter([], [], color="grey", marker=m, label=f"T_post = {t}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("nominal D' = T·B / |sector|")
    ax.set_ylabel("|E − E_FCI| (mHa)")
    ax.set_title(f"{sweep}: does D' collapse the runs?", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    print(f"wrote {save(fig, path)}")


def e2b(root: Path, sweep: str = "e2_samples", n_boot: int = 2000, seed: int = 0) -> None:
    """The sample count: |E - E_FCI| against N_s at fixed B and T, with the realised unique count and S_F."""
    cell = collections.defaultdict(list)
    if _sweep(root, sweep) is None:
        print(f"{root / sweep}: no runs yet")
        return
    for r in load_runs([_sweep(root, sweep)]):
        if not r.abs_error_mha:
            continue
        rows = read_metrics(r.path / "metrics.jsonl")
        u = np.mean([row.n_unique for row in rows])
        cell[_cfg(r).sampling.samples].append((r.seed, r.abs_error_mha, u, r.d_prime, r.vscore))
    if not cell:
        print(f"{root / sweep}: no finished runs")
        return
    table = [[f"{n:.0e}", _geo([x[1] for x in xs]), f"{np.mean([x[2] for x in xs]):.0f}",
              f"{np.mean([x[3] for x in xs]):.1f}", len(xs)] for n, xs in sorted(cell.items())]
    print(f"\n{sweep}: N2 |E − E_FCI| mHa against the samples drawn per step N_s (geometric mean over seeds, seeds):")
    print(markdown_table(["N_s", "|E − E_FCI| mHa", "mean unique per step", "realised D'", "runs"], table))
    ns = sorted(cell)
    x = np.array([math.log10(n) for n in ns for _ in cell[n]])
    y = np.array([math.log(v[1]) for n in ns for v in cell[n]])
    groups = np.array([i for i, n in enumerate(ns) for _ in cell[n]])
    slope = np.polyfit(x, y, 1)[0]
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):  # resample runs within each N_s (the cells are the design, the seeds the noise)
        idx = np.concatenate([rng.choice(np.flatnonzero(groups == g), (groups == g).sum()) for g in range(len(ns))])
        boots.append(np.polyfit(x[idx], y[idx], 1)[0])
    lo, hi = np.percentile(boots, [2.5, 97.5])
    print(f"\nd log L / d log10 N_s = {slope:.3f} [{lo:.3f}, {hi:.3f}] (95% bootstrap of runs within each N_s, "
          f"{n_boot} resamples; 0: the sample count does not matter)")


def e3(root: Path, sweeps: list[str]) -> None:
    """|E − E_FCI| (mHa) per molecule, size and post-annealing length T_post = steps − sr_from (geometric mean
    over the seeds, the seeds listed), with N (effective parameters) and the nominal S_F = min(B, |sector|)/|sector|."""
    for sweep in sweeps:
        path = _sweep(root, sweep)
        if path is None:
            continue
        cells, info, size_name = collections.defaultdict(list), {}, "d_model"
        for r in load_runs([path]):
            c = _cfg(r)
            t_post = c.optim.steps - (c.optim.sr_from or 0)
            size_name = "hidden" if c.model.ansatz == "made" else "d_model"  # MADE's width; the others' d_model
            size = getattr(c.model, size_name)
            cells[(r.molecule, size, t_post)].append(r.abs_error_mha)
            info[(r.molecule, size)] = (r.n_params_effective, abs(r.hf_error_mha),
                                        min(c.sampling.unique, r.sector_size) / r.sector_size)
        lengths = sorted({k[2] for k in cells})
        rows = [[mol, d, f"{n:,}", f"{sf:.3f}", f"{hf:.1f}"] + [_geo(cells.get((mol, d, t), []), ".2g")
                                                                  for t in lengths]
                for (mol, d), (n, hf, sf) in sorted(info.items(), key=lambda kv: (kv[1][2] * -1, kv[0][1]))]
        print(f"\n{sweep} (|E − E_FCI| mHa, geometric mean over seeds; the seeds in brackets):")
        print(markdown_table(["molecule", size_name, "N", "nominal S_F", "HF mHa"] + [f"T_post = {t}" for t in lengths],
                             rows))
        molecules = sorted({k[0] for k in cells})
        per = ", ".join(f"{m} {seed_scatter({k: v for k, v in cells.items() if k[0] == m}):.2f}" for m in molecules)
        print(f"seed scatter (within-cell SD of log L): {seed_scatter(cells):.2f} over all cells; {per}")


def e5(root: Path, sweep: str = "e5_modulus_phase") -> None:
    """|E − E_FCI| (mHa) per modulus size (d_model, with its parameter count) and phase width, at each
    post-annealing length T_post (geometric mean over the seeds, the seeds listed)."""
    path = _sweep(root, sweep)
    if path is None:
        print(f"no sweep {sweep} under {root}")
        return
    cells, n_mod, n_phase = collections.defaultdict(list), {}, {}
    for r in load_runs([path]):
        c = _cfg(r)
        key = (c.model.d_model, c.model.phase_hidden, c.optim.steps - (c.optim.sr_from or 0))
        cells[key].append(r.abs_error_mha)
        n_mod[key[0]], n_phase[key[1]] = r.n_params_modulus, r.n_params_phase
    lengths, widths = sorted({k[2] for k in cells}), sorted(n_phase)
    rows = [[d, f"{n_mod[d]:,}"] + [_geo(cells.get((d, w, t), []), ".2g") for t in lengths for w in widths]
            for d in sorted(n_mod)]
    print(f"\n{sweep} (|E − E_FCI| mHa, geometric mean over seeds; the seeds in brackets; phase MLP widths "
          f"{', '.join(f'{w} ({n_phase[w]:,} parameters)' for w in widths)}):")
    print(markdown_table(["d_model", "N modulus"] + [f"T_post {t}, phase {w}" for t in lengths for w in widths], rows))
    print(f"seed scatter (within-cell SD of log L): {seed_scatter(cells):.2f}")


def e6(paths: list[str]) -> None:
    from nqs import flops as flop_model
    from nqs.hilbert import Sector

    groups = collections.defaultdict(lambda: [0.0, 0.0, 0, 0.0])
    for r in load_runs(paths):
        c = _cfg(r)
        sector = Sector(r.n_qubits // 2, r.n_alpha, r.n_beta)
        fwd = flop_model.forward_flops(c.model, sector, 1)
        for row in read_metrics(r.path / "metrics.jsonl"):
            g = groups[(r.ansatz, r.molecule, getattr(row, "local_energy", None) or "exact-dense")]
            u = row.n_unique
            m = row.n_connected / u if u else 0.0  # connected configurations per sample, before deduplication
            paper = fwd * (u * (m + 1) + 2 * u)  # B·(M+1) forward passes plus the backward (2× forward) on B
            g[0] += row.flops_step.get("total", 0.0)
            g[1] += paper
            g[2] += 1
            g[3] += row.n_evals / (u * (m + 1)) if u else 0.0
    rows = [[a, mol, mode, n, f"{meas / n:.3g}", f"{paper / n:.3g}", f"{paper / meas:.1f}×", f"{dedup / n:.3f}"]
            for (a, mol, mode), (meas, paper, n, dedup) in sorted(groups.items())]
    print("\nE6: FLOPs per step as executed (deduplicated, KV-cached) vs the paper's uncached estimate:")
    print(markdown_table(["ansatz", "molecule", "local energy", "steps", "measured FLOPs/step", "paper estimate", "paper / measured",
                          "evaluated / (B·(M+1))"], rows))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=("e1", "e2", "e2b", "e3", "e5", "e6"))
    p.add_argument("paths", nargs="*", help="e6: run directories or folders of runs")
    p.add_argument("--root", default="runs/sweeps", type=Path,
                   help="folder of the sweeps' run folders, or of their run archives (data/scaling)")
    p.add_argument("--sweep", default=None, help="e2/e2b/e3/e5: the sweep folder under --root (default e2_collapse / "
                   "e2_samples / the three E3 sweeps / e5_modulus_phase)")
    p.add_argument("--plot", type=Path, help="e2: write the collapse plot (error against D') to this PNG")
    args = p.parse_args(argv)
    if args.plot is not None and not args.plot.parent.is_dir():
        p.error(f"--plot {args.plot}: the folder {args.plot.parent} does not exist; create it or choose another path")
    if args.experiment == "e1":
        e1(args.root)
    elif args.experiment == "e2":
        e2(args.root, args.sweep or "e2_collapse", plot=args.plot)
    elif args.experiment == "e2b":
        e2b(args.root, args.sweep or "e2_samples")
    elif args.experiment == "e3":
        e3(args.root, [args.sweep] if args.sweep else ["e3_transformer", "e3_retnet", "e3_made"])
    elif args.experiment == "e5":
        e5(args.root, args.sweep or "e5_modulus_phase")
    else:
        e6(args.paths or [str(args.root)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
