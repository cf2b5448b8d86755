"""A pretrained MetaSchedule cost model per target family, shipped in ``costmodels/``.

MetaSchedule's XGBoost model (``XGBModel``) predicts at random until it holds
``num_warmup_samples`` measured schedules, and retrains from scratch on all the samples it holds.
So a saved model is the booster *and* its training samples (``XGBModel.save``: a tar of
``model.bin`` and ``data.npy``): loaded, it ranks the first batch of a fresh search by what the
shipped logs measured, and every retraining keeps those samples beside the run's own. To keep the
shipped file small it is trained on a capped random sample of the logs (``--samples``).

Each model has a JSON sidecar: the logs it was trained on, the sample count, date, TVM version
and the command that retrains it::

    python -m tvmconv.tuning.costmodel --logs tuning_logs/x86-avx2 --out costmodels/x86.tar
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

from .intrinsics import light_intrinsics  # first: it must run before MetaSchedule is imported

light_intrinsics()  # (a no-op once done: see intrinsics)

import tvm  # noqa: E402
from tvm.s_tir import meta_schedule as ms  # noqa: E402
from tvm.s_tir import Schedule  # noqa: E402

SAMPLES = 1000  # schedules the shipped model is trained on (and carries: about 0.4 KB each)
FAILED_S = 1e9  # a logged failure's time (1e10) is not a sample worth shipping


def shipped_path(family: str | None) -> Path | None:
    """The shipped cost model of ``family`` (``Backend.cost_model_family``), if there is one."""
    from ..runtime import cache

    if not family:
        return None
    path = cache.shipped_root() / "costmodels" / f"{family}.tar"
    return path if path.is_file() else None


def new_model(num_cores: int | None = None) -> ms.cost_model.XGBModel:
    """MetaSchedule's XGBoost model as ``tune_tasks(cost_model="xgb")`` makes it."""
    return ms.cost_model.XGBModel(adaptive_training=True, num_tuning_cores=num_cores)


def load(path: str | Path, num_cores: int | None = None) -> ms.cost_model.XGBModel:
    """The model saved at ``path`` (``train`` / ``XGBModel.save``), ready to predict: where it
    holds fewer samples than MetaSchedule's warm-up count, that count is lowered to what it holds
    (else its booster would be ignored until the run had measured that many)."""
    import warnings

    model = new_model(num_cores)
    with warnings.catch_warnings():  # (XGBoost guesses the format of MetaSchedule's "model.bin", rightly)
        warnings.simplefilter("ignore", UserWarning)
        model.load(str(path))
    if model.booster is not None and model.data_size:
        model.num_warmup_samples = min(model.num_warmup_samples, model.data_size)
    model.last_train_size = model.data_size
    return model


def _read_log(log_dir: Path):
    """``(workloads, records)`` of a MetaSchedule JSON database directory: the workload JSON
    strings by index, and ``(workload index, record JSON)`` per line."""
    workloads = [json.loads(line) for line in (log_dir / "database_workload.json").read_text().splitlines() if line]
    records = []
    for line in (log_dir / "database_tuning_record.json").read_text().splitlines():
        try:
            i, rec = json.loads(line)
        except ValueError:
            continue  # a line an interrupted write cut short
        records.append((i, rec))
    return workloads, records


def train(logs: list[Path], target: str, samples: int = SAMPLES, seed: int = 0) -> tuple[ms.cost_model.XGBModel, int]:
    """An XGBoost cost model trained on ``samples`` records drawn at random from the MetaSchedule
    logs under ``logs`` (directories holding ``database_tuning_record.json``), measured on
    ``target`` (a TVM target, for feature extraction). Returns ``(model, samples used)``."""
    pool = []  # (log dir index, workload index, record JSON)
    dbs = []
    for d, log_dir in enumerate(sorted({p.parent for root in logs for p in Path(root).rglob("database_tuning_record.json")})):
        workloads, records = _read_log(log_dir)
        dbs.append(workloads)
        pool += [(d, i, rec) for i, rec in records if rec[1] and min(float(s) for s in rec[1]) < FAILED_S]
    if not pool:
        raise ValueError(f"logs: no measured records under {[str(p) for p in logs]}")
    rng = random.Random(seed)
    picked = rng.sample(pool, min(samples, len(pool)))
    groups = defaultdict(list)
    for d, i, rec in picked:
        groups[(d, i)].append(rec)
    tgt = target if isinstance(target, tvm.target.Target) else tvm.target.Target(target)
    model = new_model()
    model.adaptive_training = True
    used = 0
    for (d, i), recs in groups.items():
        workload = ms.database.Workload.from_json(dbs[d][i])
        mod = workload.mod
        ctx = ms.TuneContext(mod=mod, target=tgt, task_name=f"w{i}")
        cands, results = [], []
        for rec in recs:
            sch = Schedule(mod)
            try:
                ms.database.TuningRecord.from_json(rec, workload).trace.apply_to_schedule(
                    sch, remove_postproc=False)
            except Exception:  # noqa: BLE001 - a trace the current compute no longer takes
                continue
            cands.append(ms.MeasureCandidate(sch, ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
            results.append(ms.runner.RunnerResult([float(s) for s in rec[1]], None))
        if cands:
            model.adaptive_training = True  # (retrained once, below, on everything)
            model.last_train_size = 10 ** 12
            model.update(ctx, cands, results)
            used += len(cands)
    if not used:
        raise ValueError("logs: no record's trace applies to its workload")
    model.last_train_size = 0
    model.adaptive_training = False
    _retrain(model)
    model.adaptive_training = True
    return model, used


def _retrain(model) -> None:
    """MetaSchedule's own retraining step (``XGBModel.update``'s step 5) on all the model holds."""
    import numpy as np
    from itertools import chain

    with np.errstate(divide="ignore", invalid="ignore"):
        xs = list(chain.from_iterable(g.features for g in model.data.values()))
        ys = np.concatenate([np.divide(g.min_cost, g.costs, out=np.zeros_like(g.costs), where=g.costs != 0)
                             for g in model.data.values()])
    model._train(xs=xs, ys=ys)  # noqa: SLF001 - the step update runs; there is no public one
    model.last_train_size = model.data_size


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tvmconv.tuning.costmodel",
                                 description="Train MetaSchedule's XGBoost cost model on tuning logs and save it "
                                             "with a JSON sidecar naming what it was trained on.")
    ap.add_argument("--logs", nargs="+", required=True, type=Path, help="tuning log directories (searched below)")
    ap.add_argument("--out", required=True, type=Path, help="the model file (.tar); its sidecar is .json beside it")
    ap.add_argument("--target", default="x86-avx2", help="the tvmconv profile the logs were measured on (its "
                    "TVM target extracts the features)")
    ap.add_argument("--samples", type=int, default=SAMPLES)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.time()
    from ..backends.target import resolve

    model, used = train(args.logs, resolve(args.target).tvm(), args.samples, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(args.out))
    side = {"trained_on": [str(p) for p in args.logs], "samples": used, "seed": args.seed, "target": args.target,
            "date": time.strftime("%Y-%m-%d"), "tvm": tvm.__version__, "train_secs": round(time.time() - t0, 1),
            "command": "python -m tvmconv.tuning.costmodel " + " ".join(sys.argv[1:] if argv is None else argv)}
    args.out.with_suffix(".json").write_text(json.dumps(side, indent=1) + "\n")
    print(json.dumps(side))


if __name__ == "__main__":
    main()
