"""A `Job` is one run as a pruner sees it: the model, its mask, the data, and resumable training phases.

Pruners drive a job: `train` a named phase, `set_mask`, `rewind` or `reinitialize` survivors, and
`evaluate` a level. Each finished phase is stored; rerunning the same pruner code replays finished
phases from the store instead of training them again (OpenLTH's "skip what exists"), and a phase cut
short resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from prune_lab.data.splits import Splits
from prune_lab.errors import Diverged
from prune_lab.evaluation import Level, evaluate, measure_level
from prune_lab.init import Initializer, MaskAwareInit
from prune_lab.masks import Mask
from prune_lab.payoff import check_measure, measure_payoff
from prune_lab.pruners.scores import ScoreInputs
from prune_lab.record import tolerance
from prune_lab.seeding import generator
from prune_lab.storage import PhaseStore, atomic_torch_save
from prune_lab.training import LossFn, OnStep, TrainSettings, as_hook, cross_entropy, per_epoch, train

if TYPE_CHECKING:
    from prune_lab.cache import DenseCache

State = dict[str, Tensor]
TICKET = "{index:02d}-{name}.pt"  # tickets/<index>-<level name>.pt: {"state_dict", "masks", "level", "index"}


def save_ticket(folder: Path, index: int, name: str, model: nn.Module, mask: Mask) -> Path:
    """Level `index`'s weights and mask, written atomically (a rerun of the level rewrites the same file)."""
    path = folder / TICKET.format(index=index, name=name)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(path, {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                             "masks": mask.state_dict(),
                             "level": name, "index": index})
    return path


def copy_state(model: nn.Module) -> State:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Job:
    def __init__(
        self,
        model: nn.Module,
        data: Splits,
        settings: TrainSettings,
        prunable: list[str],
        init: Initializer,
        seed: int,
        store: PhaseStore,
        log: Callable[[dict[str, Any]], None] = lambda record: None,
        dense_cache: DenseCache | None = None,
        measure: str = "cheap",
        tickets: Path | None = None,
    ):
        self.model, self.data, self.settings = model, data, settings
        self.prunable, self.init, self.seed, self.store, self.log = prunable, init, seed, store, log
        self.mask = Mask.ones(model, prunable)
        self.initial_state = copy_state(model)  # the rewinding target of the Lottery Ticket procedure
        self.levels: list[Level] = []
        self.history: list[dict[str, Any]] = []
        self._phases: set[str] = set()
        self.resumed: list[dict[str, Any]] = []  # phases this attempt took from checkpoints (results.json)
        self.dense_cache = dense_cache  # shares pure dense phases between a sweep's jobs (None: off)
        self.cached_phases: list[dict[str, Any]] = []  # {"phase", "key", "hit"} per phase the cache served
        self.epochs_trained = 0  # every phase's epochs so far: the training budget behind the next level
        self.measure = check_measure(measure)  # what each level's payoff measures (prune_lab.payoff.MEASURES)
        self.tickets = tickets  # a folder: every level's weights and mask are saved there (keep_tickets=true)
        # tick(phase, step, total_steps, loss) inside epochs (prune_lab.training.train): a live bar, or None
        self.tick: Callable[[str, int, int, float], None] | None = None

    # --- what pruners read -------------------------------------------------------------------------
    def weights(self) -> dict[str, Tensor]:
        """The prunable weight tensors by name (live, detached views)."""
        params = dict(self.model.named_parameters())
        return {n: params[n].detach() for n in self.prunable}

    def generator(self, *purpose: object) -> torch.Generator:
        """A reproducible random stream for one purpose (e.g. "random-pruner", round)."""
        return generator(self.seed, *purpose)

    def score_inputs(self, *purpose: object, mask: Mask | None = None) -> ScoreInputs:
        """What a score reads now: the model, the mask in force (the job's, unless a phase has its own), the
        data, and the random stream of `purpose`."""
        return ScoreInputs(self.model, self.mask if mask is None else mask, self.data, self.generator(*purpose))

    # --- what pruners do ---------------------------------------------------------------------------
    def train(self, phase: str, epochs: int, *, on_step: OnStep | None = None,
              loss_fn: LossFn = cross_entropy, start_step: int = 0) -> None:
        """Train the masked model for `epochs` epochs as phase `phase` (unique within a run); from optimizer
        step `start_step` of that budget on (late rewinding: the schedule and data order of steps k..end).

        The step hook's state is stored with the finished phase, so a replayed phase hands the hook what it
        had accumulated (e.g. movement scores) as if it had trained again."""
        on_step = as_hook(on_step)
        if phase in self._phases:
            raise ValueError(f"phase {phase!r} trained twice in one run; give each phase its own name")
        shareable = self._shareable(on_step, loss_fn) and start_step == 0  # decided before this phase counts
        self._phases.add(phase)
        steps = per_epoch(len(self.data.train), self.settings.batch_size)
        self.epochs_trained += epochs - start_step / steps if start_step else epochs  # late rewinding: less
        done = self.store.load(phase, "done")
        if done is not None:  # finished in an earlier attempt: replay its outcome, train nothing
            self.model.load_state_dict(done["model"])
            self.mask = Mask.from_state_dict(done["mask"], self._device())
            self.history += done["history"]
            if on_step is not None:
                on_step.load_state_dict(done.get("hook", {}))
            self.log({"phase": phase, "event": "restored"})
            self.resumed.append({"phase": phase, "restored": True})
            return
        if shareable and self.dense_cache is not None:
            # A cache failure (full, unreadable) is one line inside: the outcome is then this job's own training,
            # stored below in the run's PhaseStore as any phase's; `like`: an entry must fit this model exactly.
            outcome = self.dense_cache.fetch_or_train(
                phase, epochs, lambda: self._train_phase(phase, epochs, on_step, loss_fn),
                like=self.model.state_dict())
            self.cached_phases.append({"phase": phase, "key": outcome.key, "hit": outcome.hit})
            history = outcome.state["history"]
            if outcome.hit:  # another job trained this exact phase: same inputs, so the same outcome
                self.model.load_state_dict(outcome.state["model"])
                self.history += history
                self.log({"phase": phase, "event": "dense_cache_hit", "key": outcome.key})
        else:
            history = self._train_phase(phase, epochs, on_step, loss_fn, start_step)["history"]
        self.store.save(phase, "done", {"model": self.model.state_dict(), "mask": self.mask.state_dict(),
                                        "history": history,
                                        "hook": on_step.state_dict() if on_step is not None else {}})
        self.store.drop(phase, "partial")

    def _train_phase(self, phase: str, epochs: int, on_step: OnStep | None, loss_fn: LossFn,
                     start_step: int = 0) -> dict[str, Any]:
        partial = self.store.load(phase, "partial")
        if partial is not None:  # cut short in an earlier attempt (kill, preemption, requeue)
            self.resumed.append({"phase": phase, "from_epoch": partial["epoch"]})
            self.log({"phase": phase, "event": "resumed", "from_epoch": partial["epoch"], "epochs": epochs})
        result = train(
            self.model, self.mask, self.data, self.settings, epochs, seed=self.seed, phase=phase, on_step=on_step,
            loss_fn=loss_fn, resume=partial, start_step=start_step,
            save=lambda state: self.store.save(phase, "partial", state), log=self.log, tick=self.tick,
        )
        self.mask = result.mask
        self.history += result.history
        return {"model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "history": result.history}

    def _shareable(self, on_step: OnStep | None, loss_fn: LossFn) -> bool:
        """Pure dense training, whose outcome depends on the run's config alone (prune_lab.cache): the job's
        first phase, from the initial weights, under an all-ones mask, with no step hook and the default loss."""
        if self.dense_cache is None or self._phases or on_step is not None or loss_fn is not cross_entropy:
            return False
        if not all(bool(keep.all()) for keep in self.mask.tensors.values()):
            return False
        state = self.model.state_dict()
        return all(torch.equal(state[k], v) for k, v in self.initial_state.items())

    def set_mask(self, mask: Mask) -> None:
        mask.check_fits(self.model)
        self.mask = mask
        mask.apply_(self.model)

    def rewind(self, state: State, only_prunable: bool = False) -> None:
        """Load saved values (e.g. `initial_state`) into the model, then re-apply the mask."""
        if only_prunable:
            current = self.model.state_dict()
            state = {**current, **{n: state[n] for n in self.prunable}}
        self.model.load_state_dict(copy.deepcopy(state))
        self._fit_init_to_mask()
        self.mask.apply_(self.model)

    def reinitialize(self, *stream: object) -> None:
        """A fresh draw of every weight from the run's init scheme (a stream apart from the original), masked."""
        self.init(self.model, self.generator("reinit", *stream))
        self._fit_init_to_mask()
        self.mask.apply_(self.model)

    def _fit_init_to_mask(self) -> None:
        """The weights were just reset (still dense): a mask-aware init (prune_lab.init.MaskAwareInit, e.g.
        init=sparsity_aware) adapts the survivors to the mask. Plain schemes are not mask-aware."""
        if isinstance(self.init, MaskAwareInit):
            self.init.fit_to_mask(self.model, self.mask)

    @contextlib.contextmanager
    def branch(self) -> Iterator[None]:
        """Work inside (a control arm, say) leaves the job as it found it: weights, mask and training budget."""
        state, mask, epochs = copy_state(self.model), self.mask, self.epochs_trained
        try:
            yield
        finally:
            self.model.load_state_dict(state)
            self.set_mask(mask)
            self.epochs_trained = epochs

    def save_snapshot(self, name: str) -> None:
        """Persist the current weights (e.g. for late rewinding) so a resumed run finds them."""
        self.store.save(name, "snapshot", {"model": copy_state(self.model)})

    def load_snapshot(self, name: str) -> State:
        snap = self.store.load(name, "snapshot")
        if snap is None:
            raise KeyError(f"no snapshot {name!r}: save_snapshot it before loading")
        return {k: v.to(self._device()) for k, v in snap["model"].items()}

    def evaluate(self, name: str, target_sparsity: float, **extra: Any) -> Level:
        """Measure the model now and record it as a level of the run's results.

        A level whose mask is further from its target than one unit (row) per layer is a pruner's bug: it is
        refused here rather than recorded under a target it did not reach."""
        reached = self.mask.sparsity()
        total = sum(t.numel() for t in self.mask.tensors.values())
        slack = sum(t[0].numel() for t in self.mask.tensors.values()) / total
        if abs(reached - target_sparsity) > slack + 1e-9:
            raise RuntimeError(f"level {name!r} is pruned to {reached:.4f}, not its target {target_sparsity:.4f}; "
                               "the pruner missed its target (a bug: please report it)")
        if abs(reached - target_sparsity) > tolerance(total, len(self.mask.tensors)):
            # whole units could not land on the target: the level says so (the record contract and the analysis
            # read `off_target`); a target refused before training (Units.check) never gets here
            extra = {**extra, "off_target": True}
            print(f"prune_lab: level {name!r} is at sparsity {reached:.4f}, not its target {target_sparsity:.4f} "
                  "(whole units are removed); recorded with off_target=true", file=sys.stderr, flush=True)
        bad = [n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise Diverged(f"level {name!r}: weights of {', '.join(bad[:3])} are not finite after training "
                           f"(it diverged); lower train.lr (now {self.settings.lr:g})")
        batch = self.settings.eval_batch_size
        level = measure_level(
            self.model, self.prunable, name, target_sparsity,
            test=evaluate(self.model, self.data.test, batch), val=evaluate(self.model, self.data.val, batch),
            **measure_payoff(self.model, self.data.train.x[:1], self.measure), epochs_trained=self.epochs_trained,
            **extra,
        )
        if not (math.isfinite(level.test_loss) and (len(self.data.val) == 0 or math.isfinite(level.val_loss))):
            raise Diverged(f"level {name!r}: the test loss is {level.test_loss}, the validation loss "
                           f"{level.val_loss} (non-finite outputs); lower train.lr (now {self.settings.lr:g})")
        if self.tickets is not None:  # the level's ticket, to measure or export later (prune_lab.measure)
            save_ticket(self.tickets, len(self.levels), name, self.model, self.mask)
        self.levels.append(level)
        self.log({"level": name, "sparsity": level.sparsity, "test_acc": level.test_acc,
                  "test_loss": level.test_loss})
        return level

    def score_test(self) -> dict[str, float]:
        s = evaluate(self.model, self.data.test, self.settings.eval_batch_size)
        return {"test_acc": s.acc, "test_loss": s.loss}

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device
