"""A step is one run of a stage tool (pretrain, teacher_mtl, distill, evaluate, finetune, export)
on one stage config plus overrides. The pipeline and the claim experiment are both lists of steps
whose outputs feed later steps; this module runs such a list:

* every step's config is validated before the first step starts (the directories earlier steps
  will write count as present), so a typo in the last stage costs seconds, not the whole run;
* a step whose resolved config matches a finished run recorded in ``steps_state.json``, made
  from the same runs of the steps it reads, is skipped; an interrupted step is run again and
  resumes from its own checkpoints (and what reads it runs again); a step whose config (or an
  earlier step's config) changed since its output was made gets a fresh directory (the old one
  is kept, renamed);
* each step's wall time and headline result are collected for the summary.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ernie_tiny.config import NO_PLAN, ConfigError, Plan, dump_config, load_config
from ernie_tiny.files import write_text_atomically
from ernie_tiny.stages import STAGES


STATE_FILE = "steps_state.json"


def flatten(mapping: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """{'Train': {'max_steps': 5}} -> {'Train.max_steps': 5}; lists and scalars are leaves."""
    flat: Dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def override_text(key: str, value: Any) -> str:
    """A ``-o`` string; JSON is valid YAML flow syntax, so the value reads back unchanged."""
    return f"{key}={json.dumps(value, ensure_ascii=False)}"


class ProductOf(str):
    """A wired value naming an earlier step's product: the path as the plan sees it (before any
    config is loaded), replaced by ``validate`` with the product the earlier step's resolved
    config makes (its folder can depend on the config: ``student/`` or ``students/``)."""

    def __new__(cls, path, step: str):
        value = super().__new__(cls, str(path))
        value.step = step
        return value


@dataclass
class Step:
    name: str                      # unique in its list: 'distill', 'evaluate/mitkd/held_out'
    stage: str                     # a key of ernie_tiny.stages.STAGES
    config: str                    # the stage's YAML config
    output_dir: Path
    overrides: Dict[str, Any] = field(default_factory=dict)  # dotted key -> value, from the user's config
    wired: Dict[str, Any] = field(default_factory=dict)      # dotted key -> value the plan sets (inputs, output dir)
    origin: str = ""               # where `overrides` were written, for error messages
    after: Sequence[str] = ()      # steps whose outputs this one reads
    resolved: Any = None           # the validated stage config
    fingerprint: str = ""

    @property
    def product(self) -> Path:
        """What the next steps read: from the resolved config once ``validate`` loaded it."""
        return STAGES[self.stage].product(self.output_dir, self.resolved)

    def override_list(self) -> List[str]:
        return [override_text(k, v) for k, v in {**self.overrides, **self.wired, "Global.output_dir": str(self.output_dir)}.items()]

    def load(self, plan: Plan = NO_PLAN):
        """Validate this step's config (ConfigError names the step, the file and the key); ``plan``:
        what earlier steps will write (see ``validate``)."""
        clash = sorted(set(self.overrides) & (set(self.wired) | {"Global.output_dir"}))
        if clash:
            raise ConfigError(f"{self.origin or self.config}: step {self.name}: {', '.join(clash)} is set by the "
                              f"plan (an earlier step's output, or this step's directory); remove the override")
        try:
            return load_config(STAGES[self.stage].load_schema(), self.config, self.override_list(), plan)
        except ConfigError as err:
            where = f" (overrides from {self.origin})" if self.origin and self.overrides else ""
            raise ConfigError(f"step {self.name}: {self.config}{where}:\n{err}") from None


@dataclass
class StepResult:
    step: Step
    status: str                    # 'ran' or 'skipped (done before)'
    seconds: float                 # of this run; for a skipped step, of the run that made it


def validate(steps: Sequence[Step]) -> None:
    """Load every step's config now. Directories earlier steps will write count as present."""
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise ValueError(f"step names repeat: {names}")
    fingerprints: Dict[str, str] = {}
    problems = []
    plan = Plan.of([s.output_dir for s in steps])
    by_name = {s.name: s for s in steps}
    for step in steps:
        step.wired = {key: str(by_name[value.step].product) if isinstance(value, ProductOf) and value.step in by_name
                      else value for key, value in step.wired.items()}  # earlier steps are resolved by now
        try:
            step.resolved = step.load(plan)
        except ConfigError as err:
            problems.append(str(err))
            continue
        text = json.dumps(step.resolved.model_dump(mode="json"), sort_keys=True)
        upstream = "".join(fingerprints.get(name, "") for name in step.after)
        step.fingerprint = hashlib.sha256((step.stage + text + upstream).encode()).hexdigest()[:16]
        fingerprints[step.name] = step.fingerprint
        readers = [later.name for later in steps if step.name in later.after]
        several = STAGES[step.stage].several_models_reason(step.resolved)
        if several and readers:
            problems.append(f"step {step.name}: {step.config}: {several}, but {', '.join(readers)} "
                            f"read{'s' if len(readers) == 1 else ''} one model from it")
        model = getattr(step.resolved, "Model", None)
        if callable(getattr(model, "sizes", None)):  # a stage that makes an encoder (pretrain, teacher_mtl)
            plan = plan.with_model_sizes(str(step.product), model.sizes())  # later steps check layers and heads now
    if problems:
        raise ConfigError("\n".join(problems))


class StepState:
    """``steps_state.json`` in the run's root: per step, the fingerprint of the config it ran with,
    whether it finished, and its wall time. Rewritten whole (atomically) after every change."""

    def __init__(self, root: Path):
        self.path = Path(root) / STATE_FILE
        self.steps: Dict[str, dict] = {}
        if self.path.is_file():
            try:
                self.steps = json.loads(self.path.read_text(encoding="utf-8"))["steps"]
            except (ValueError, KeyError) as err:
                raise ConfigError(f"{self.path}: damaged ({err}); delete it to run every step again") from None

    def get(self, name: str) -> Optional[dict]:
        return self.steps.get(name)

    def set(self, name: str, **record) -> None:
        self.steps[name] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.path, json.dumps({"steps": self.steps}, indent=1) + "\n")


def _set_aside(directory: Path) -> Optional[Path]:
    if not directory.exists():
        return None
    target = directory.with_name(f"{directory.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.move(str(directory), str(target))
    return target


def run_steps(steps: Sequence[Step], root: Path, title: str = "pipeline") -> List[StepResult]:
    """Run (or skip) each step in order; see the module docstring. Configs must be validated."""
    if int(os.environ.get("PADDLE_TRAINERS_NUM", "1")) > 1:
        raise SystemExit(f"the {title} runs its stages in one process; under paddle.distributed.launch, launch "
                         f"each stage's tool (tools/distill.py, ...) on its own with the configs the {title} uses")
    state = StepState(root)
    results = []
    for number, step in enumerate(steps, 1):
        record = state.get(step.name)
        head = f"[{title} {number}/{len(steps)}] {step.name}"
        inputs = {name: (state.get(name) or {}).get("finished_at") for name in step.after}
        if (record and record["fingerprint"] == step.fingerprint and record["complete"] and step.product.exists()
                and record.get("inputs") == inputs):
            print(f"{head}: done before, skipped ({step.product})", flush=True)
            results.append(StepResult(step, "skipped (done before)", record.get("seconds", 0.0)))
            continue
        same = bool(record) and record["fingerprint"] == step.fingerprint and record.get("inputs") == inputs
        if record and not same:
            moved = _set_aside(step.output_dir)
            if moved:
                print(f"{head}: its config or inputs changed since {step.output_dir} was made; "
                      f"the old output is kept as {moved}", flush=True)
        print(f"{head}: {'resuming' if same else 'running'} {step.stage} -> {step.output_dir}", flush=True)
        config = step.load()  # again, now that the earlier steps' outputs exist: full checks
        step.output_dir.mkdir(parents=True, exist_ok=True)
        dump_config(config, step.output_dir / "step_config.yaml")
        state.set(step.name, fingerprint=step.fingerprint, complete=False, stage=step.stage, inputs=inputs)
        started = time.time()
        STAGES[step.stage].load_run()(config)
        seconds = time.time() - started
        state.set(step.name, fingerprint=step.fingerprint, complete=True, stage=step.stage, seconds=round(seconds, 1),
                  finished_at=time.time(), inputs=inputs)
        print(f"{head}: finished in {seconds / 60:.1f} min", flush=True)
        results.append(StepResult(step, "ran", seconds))
    return results
