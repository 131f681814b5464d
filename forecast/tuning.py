"""An Optuna study run through Hydra: the search space, where the study is stored, and the sweep loop.

`python -m forecast.tune` (forecast/tune.py) names the study and launches
`python -m forecast.train -m hydra/sweeper=optuna <space as sweep overrides>`. Hydra's sweeper
(hydra_plugins/forecast_optuna) calls `sweep` here: it asks the study for each trial's settings,
launches every trial as an ordinary training through Hydra's launcher (basic, joblib, submitit),
and tells the study how it ended. A trial reports its val/loss per epoch to the study itself
(forecast/pruning.py), so the study's pruner can stop it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path

import optuna
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep, Transformer
from hydra.core.utils import JobStatus
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from forecast import config, tracking
from forecast.errors import InputError, reported
from forecast.training import check_settings

SWEEP_SYNTAX = "interval(a,b), tag(log,interval(a,b)), choice(x,y,...) or range(a,b,step)"
MAX_CHECKED = 512  # combinations of the discrete choices checked one by one; more: each choice alone
INTERRUPTED = "interrupted"  # user attribute of a trial whose process was stopped: it does not count toward n_trials
optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what each trial did


# ---- the search space -------------------------------------------------------------------------------


def space_overrides(params: DictConfig | dict, fixed: list[str] = ()) -> list[str]:
    """The nested `tune.params` node as sweep overrides (`model.lr=tag(log,interval(...))`), minus keys in `fixed`."""
    flat: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif value is not None:  # null removes a parameter from the space
                flat[f"{prefix}{key}"] = str(value)

    walk(OmegaConf.to_container(params) if isinstance(params, DictConfig) else params, "")
    return [f"{k}={v}" for k, v in flat.items() if k not in set(fixed)]


def unused(cfg: DictConfig) -> list[str]:
    """Settings of the space this training ignores, so searching them would spend trials on nothing."""
    if cfg.model.get("quantiles"):
        print("model.loss is not searched: with model.quantiles the training loss is the pinball loss of the levels")
        return ["model.loss"]
    return []


def parse_space(arguments: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """Split overrides into the search space (sweep overrides, as Optuna distributions) and the fixed rest."""
    space, fixed = {}, []
    for text, override in zip(arguments, config.parse_overrides(arguments)):
        if override.is_sweep_override():
            space[override.get_key_element().lstrip("+~")] = distribution(text, override)
        else:
            fixed.append(text)
    return space, fixed


def distribution(text: str, override) -> BaseDistribution:
    """One sweep override as an Optuna distribution; InputError for a sweep Optuna cannot sample."""
    value = override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        if not choices:
            raise InputError(f"search space '{text}': give at least one choice")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if any(isinstance(v, float) for v in (start, stop, step)):
            return CategoricalDistribution([float(v) for v in override.sweep_iterator()])
        return IntDistribution(int(start), int(stop) - 1, step=int(step))
    if isinstance(value, IntervalSweep):
        low, high, log = value.start, value.end, "log" in value.tags
        if not (low < high) or (log and low <= 0):
            raise InputError(f"search space '{text}': give low < high" + (" and low > 0 for a log scale" if log else ""))
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise InputError(f"search space '{text}': not a sweep Optuna can sample; use {SWEEP_SYNTAX}")


def quote_space(argv: list[str]) -> list[str]:
    """`tune.params.<key>=choice(12,24)` as typed (shell quotes only) is a sweep to Hydra, which a single
    run refuses with exit 1; quoted for Hydra (`...='choice(12,24)'`) it is the space's text, as meant."""
    quoted = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~").startswith("tune.params.") and "(" in value and not any(q in value for q in "'\""):
            arg = f"{key}='{value}'"
        quoted.append(arg)
    return quoted


def override_text(key: str, value) -> str:
    """`key=value` as Hydra reads it back: strings that are not plain words are quoted."""
    if isinstance(value, str) and not value.replace("_", "").replace("-", "").isalnum():
        return f"{key}='{value}'"
    return f"{key}={value}"


def check_space(cfg: DictConfig, space: dict) -> None:
    """Every setting of the space exists, and every combination of its choices (each bound of an interval) trains."""
    for key in space:
        if OmegaConf.select(cfg, key, default=KeyError) is KeyError:
            raise InputError(f"tune.params: '{key}' is not a setting of forecast.train; remove it or fix its name")
    values = {
        k: list(d.choices) if isinstance(d, CategoricalDistribution) else sorted({d.low, d.high}) for k, d in space.items()
    }  # fmt: skip
    combos = 1
    for v in values.values():
        combos *= len(v)
    if combos <= MAX_CHECKED:
        candidates = [dict(zip(values, c)) for c in itertools.product(*values.values())]
    else:
        candidates = [{k: v} for k, vs in values.items() for v in vs]
    for chosen in candidates:
        trial = cfg.copy()
        for k, v in chosen.items():
            OmegaConf.update(trial, k, v, merge=False)
        try:
            check_settings(trial)
        except InputError as e:
            shown = " ".join(override_text(k, v) for k, v in chosen.items())
            raise InputError(
                f"the search space allows a training that cannot run ({shown}): {str(e).splitlines()[0]}\n"
                "Narrow tune.params (conf/tune/) or fix the setting on the command line."
            ) from None


# ---- the study: storage, name, trials that count ------------------------------------------------------


def default_storage() -> str:
    """sqlite:///optuna.db beside the embedded tracking store (the working directory, or the folder of a
    sqlite MLFLOW_TRACKING_URI); in the working directory when the tracking store is a server."""
    uri = tracking.tracking_uri()
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).parent / 'optuna.db'}"
    return "sqlite:///optuna.db"


def study_name(experiment: str, architecture: str, dataset: str, settings: dict) -> str:
    """`<experiment>.<architecture>.<dataset>.<digest>`: the same command (but for `trials`) names the same study."""
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{experiment}.{architecture}.{dataset}.{digest}"


def counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that used up budget: completed, pruned, or failed by the training itself (not interrupted ones)."""
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [t for t in study.get_trials(deepcopy=False, states=done) if not t.user_attrs.get(INTERRUPTED)]


def load(storage: str, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


# ---- the sweep (called by the Hydra sweeper plugin) -----------------------------------------------------


def sweep(
    launcher, arguments: list[str], n_trials, n_jobs, storage, study_name, sampler, pruner, direction, defaults: DictConfig | None = None
) -> None:
    """Run trials until the study holds `n_trials` counted ones; every trial is one job of Hydra's launcher.

    `defaults` is the composed training config: a new study's first trial is its settings (those the space holds).
    """
    with reported():  # bad settings: `error: ...`, exit 2; Ctrl-C: the trial under way is told FAIL (interrupted)
        if not isinstance(n_trials, int) or n_trials < 1 or not isinstance(n_jobs, int) or n_jobs < 1:
            raise InputError(f"hydra.sweeper.n_trials={n_trials}, n_jobs={n_jobs}: give positive whole numbers")
        if not storage or not study_name:
            raise InputError("hydra/sweeper=optuna needs hydra.sweeper.storage and study_name; python -m forecast.tune sets both")
        space, fixed = parse_space(arguments)
        if not space:
            raise InputError(f"hydra/sweeper=optuna: no search space among the overrides; give at least one {SWEEP_SYNTAX}")
        with tracking.taking_turns(storage):  # two tunings starting together (compare budget=tuned) on a new study file
            study = optuna.create_study(
                storage=storage, study_name=study_name, direction=direction, pruner=instantiate(pruner), load_if_exists=True
            )
        for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # left by a process that was killed
            study._storage.set_trial_user_attr(stale._trial_id, INTERRUPTED, True)
            study.tell(stale.number, state=TrialState.FAIL, skip_if_finished=True)
        seeded = {**OmegaConf.to_container(sampler)} if isinstance(sampler, DictConfig) else dict(sampler)
        if "seed" in seeded and seeded["seed"] is not None:
            seeded["seed"] = int(seeded["seed"]) + len(study.trials)  # a resumed study does not redraw its first trials
        study.sampler = instantiate(seeded)
        done = len(counted(study))
        print(f"study {study_name} ({storage}): {done} of {n_trials} trials done", flush=True)
        if not study.trials and defaults is not None and (first := configured(space, defaults)):
            study.enqueue_trial(first)
            print(f"trial 0 tries the configured settings first: {' '.join(override_text(k, v) for k, v in first.items())}", flush=True)
        while done < n_trials:
            trials = [study.ask(space) for _ in range(min(n_jobs, n_trials - done))]
            jobs = [[*fixed, *(override_text(k, v) for k, v in t.params.items()), f"+trial={t.number}"] for t in trials]
            try:
                returns = launcher.launch(jobs, initial_job_idx=trials[0].number)
            except BaseException:  # Ctrl-C or a training's bad input: these trials did not run to an end
                for t in trials:
                    t.set_user_attr(INTERRUPTED, True)
                    study.tell(t, state=TrialState.FAIL, skip_if_finished=True)
                raise
            for t, job in zip(trials, returns):
                tell(study, t, job)
            done = len(counted(study))


def configured(space: dict[str, BaseDistribution], cfg: DictConfig) -> dict:
    """The config's own value of every searched setting that its distribution holds (the rest is sampled).

    Starting from the defaults means a search never ends worse on validation than not searching at all.
    """
    values = {}
    for key, dist in space.items():
        try:
            value = OmegaConf.select(cfg, key)
            if value is not None and dist._contains(dist.to_internal_repr(value)):
                values[key] = value
        except (OmegaConfBaseException, ValueError, TypeError):  # unresolvable, or outside the distribution
            continue
    return values


def tell(study: optuna.Study, trial: optuna.Trial, job) -> None:
    """Tell the study how a trial's training ended: its best val/loss, pruned, or failed."""
    if job.status == JobStatus.FAILED:  # an exception the training did not report: a bug, shown in full
        study.tell(trial, state=TrialState.FAIL)
        job.return_value  # noqa: B018 (re-raises the job's exception)
    value = job.return_value
    stored = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)  # as the training left it
    if stored.user_attrs.get("pruned_at_epoch"):
        study.tell(trial, state=TrialState.PRUNED)
        outcome = f"pruned after epoch {stored.user_attrs['pruned_at_epoch']}"
    elif isinstance(value, float) and math.isfinite(value):
        study.tell(trial, value)
        outcome = f"val/best_loss {value:.4f}"
    else:
        study.tell(trial, state=TrialState.FAIL)
        outcome = "failed (its run is FAILED; the study goes on)"
    best = f" | best so far {study.best_value:.4f} (trial {study.best_trial.number})" if any_complete(study) else ""
    print(f"trial {trial.number}: {outcome}{best}", flush=True)


def any_complete(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
