"""The training loop shared by `pretrain.py` and `finetune.py`, on accelerate.

One process or many (DDP, FSDP or DeepSpeed through `accelerate config`), CPU or GPU, mixed precision, gradient
accumulation, activation checkpointing, LoRA. Checkpoints are written atomically and resume mid-epoch to the
same result as an uninterrupted run: model, optimizer, scheduler, RNG, data order and the GASS score bank are
all restored, and augmentations are a function of (seed, epoch, sample).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from modeling_gadms import GADMSConfig, GADMSForPreTraining, GADMSModel, GADMSProcessor, ScoreBank, person_image_processor
from modeling_gadms.distributed import all_gather_variable
from modeling_gadms.tokenization import build_tokenizer, merges_for_words

from .config import TrainingConfig
from .data import CaptionSamples, Collator, EpochSampler

logger = logging.getLogger(__name__)
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


class TrainingSetupError(ValueError):
    """A run that cannot train as configured (found before any step); the scripts print it as one line."""


@dataclass
class TrainState:
    """Counters saved with every checkpoint."""

    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    skipped_images: int = 0
    best_metric: float = -1.0
    best_epoch: int = -1
    best_step: int = -1

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


class MaskStream:
    """The masks' random stream: a `torch.Generator` reseeded before every forward pass from (seed, process,
    optimizer step, micro-batch), so the masks of a step are the same in an uninterrupted run, in a resumed one
    (whatever checkpoint it resumed from) and on every process count's own rank, with no state to checkpoint."""

    def __init__(self, seed: int, process_index: int = 0):
        self.seed, self.process_index = seed, process_index
        self.generator = torch.Generator()

    def for_step(self, step: int, micro_batch: int = 0) -> torch.Generator:
        """The generator, seeded for micro-batch `micro_batch` of optimizer step `step`."""
        key = f"masks:{self.seed}:{self.process_index}:{step}:{micro_batch}".encode()
        return self.generator.manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1)

    # registered for checkpointing only to keep the checkpoint layout (custom_checkpoint_1.pkl) of earlier
    # versions, whose checkpoints held a generator state here: nothing needs restoring
    def state_dict(self) -> dict:
        return {"seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        pass


def warmup_cosine(config: TrainingConfig, steps_per_epoch: int):
    """LR factor: linear warm-up from `warmup_start_factor` over `warmup_epochs`, then cosine to 0 (docs/method.md section 6).

    With `schedule_unit="epoch"` the factor changes once per epoch, as in the released code.
    """
    total = config.epochs

    def factor(step: int) -> float:
        epoch = step / max(steps_per_epoch, 1)
        if config.schedule_unit == "epoch":
            epoch = math.floor(epoch)
        if epoch < config.warmup_epochs:
            start = config.warmup_start_factor
            return start + (1 - start) * epoch / config.warmup_epochs
        span = max(total - config.warmup_epochs, 1e-8)
        progress = min((epoch - config.warmup_epochs) / span, 1.0)
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def words_of(captions) -> list[str]:
    """The words and punctuation marks of captions, for a small from-scratch vocabulary."""
    return sorted({w for c in captions for w in re.findall(r"[a-z]+|[^\sa-z]", c.lower())})


def build_model(config: TrainingConfig, captions=None, num_identities: int = 0):
    """The model and processor a run starts from: a [`GADMSForPreTraining`] of `config.model` (a directory or hub
    id: the dual encoder's weights, and the training heads when the directory has them, else fresh ones) or a fresh
    tiny one, with the objective settings of `config` (`config.objective_settings()`)."""
    import modeling_gadms  # noqa: F401  (registers the Auto classes)
    from transformers import AutoConfig, AutoModelForPreTraining, AutoProcessor

    if config.model == "tiny":
        if config.image_size is None:
            raise ValueError("model: tiny is built from scratch: set image_size ([height, width])")
        height, width = config.image_size
        if captions is None:
            raise ValueError("model: tiny builds its vocabulary from the training captions, none were given")
        tokenizer = build_tokenizer(merges_for_words(words_of(captions)))
        model_config = GADMSConfig.tiny(vocab_size=len(tokenizer), image_size=(height, width),
                                        num_identities=num_identities, **config.model_overrides)
        model = GADMSForPreTraining(model_config, objective=config.objective_settings())
        processor = GADMSProcessor(person_image_processor(height, width), tokenizer)
        return model, processor
    overrides = dict(config.model_overrides)
    if num_identities:
        overrides["num_identities"] = num_identities
    model_config = AutoConfig.from_pretrained(config.model)
    for key, value in overrides.items():
        if isinstance(value, dict):  # a tower's keys (`vision_config.patch_size`), checked by the training config
            for sub_key, sub_value in value.items():
                setattr(getattr(model_config, key), sub_key, sub_value)
        else:
            setattr(model_config, key, value)
    if hasattr(model_config, "check"):
        model_config.check()
    if config.image_size is None:  # "the model's": the data transforms read it from the config from now on
        config.image_size = list(model_config.image_size)
    if tuple(model_config.image_size) != tuple(config.image_size):  # before the weights are read
        raise ValueError(
            f"{config.model} takes {tuple(model_config.image_size)} inputs but image_size is "
            f"{config.image_size}; "
            "set image_size to the model's (or null) or convert the model at that size"
        )
    model = AutoModelForPreTraining.from_pretrained(config.model, config=model_config, use_safetensors=True)
    model.objective = config.objective_settings()
    processor = AutoProcessor.from_pretrained(config.model)
    return model, processor


class Trainer:
    """Runs one training job described by a [`TrainingConfig`].

    `train_samples` is a [`CaptionSamples`]; `eval_split` / `test_split` are `evaluation.RetrievalSplit`s
    (gallery images and caption queries) used each epoch (validation) and at the end (test).
    """

    def __init__(self, config: TrainingConfig, model, processor, train_samples: CaptionSamples,
                 eval_split=None, test_split=None, collator=None):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration, set_seed

        self.config = config
        self.output_dir = Path(config.output_dir)
        trackers = ["tensorboard"] if _tensorboard_available() else []
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            log_with=trackers or None,
            project_config=ProjectConfiguration(project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "logs")),
        )
        set_seed(config.seed)
        needed = config.batch_size * self.accelerator.num_processes * config.gradient_accumulation_steps
        if len(train_samples) < needed:
            raise TrainingSetupError(
                f"batch_size {config.batch_size} x {self.accelerator.num_processes} process(es) x "
                f"gradient_accumulation_steps {config.gradient_accumulation_steps} = {needed} samples a step, but "
                f"the training data has {len(train_samples)} samples (one per caption): not one full step, "
                f"nothing would be trained. Set batch_size to at most "
                f"{len(train_samples) // (needed // config.batch_size)} or use more data"
            )
        self.processor = processor
        self.train_samples = train_samples
        self.eval_split, self.test_split = eval_split, test_split
        self.state = TrainState()

        if config.activation_checkpointing:
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
        # the GASS score bank is the trainer's: read before each step, written after with every process's scores
        self.score_bank = None
        if config.objective == "gadms":
            self.score_bank = ScoreBank.from_config(model.config, num_samples=len(train_samples),
                                                    objective=model.objective)
        if config.lora:
            model = self._wrap_lora(model)
        # an epoch is a whole number of optimizer steps on every process: the batches are cut to a multiple of
        # processes x accumulation steps (the rest of the shuffled data waits for another epoch), so that no step
        # accumulates fewer batches than the others and the schedule's epochs are the data's
        group = self.accelerator.num_processes * config.gradient_accumulation_steps
        batches = len(train_samples) // config.batch_size // group * group
        self.sampler = EpochSampler(len(train_samples), seed=config.seed, num_samples=batches * config.batch_size)
        loader = DataLoader(
            train_samples,
            batch_size=config.batch_size,
            sampler=self.sampler,
            num_workers=config.num_workers,
            collate_fn=collator or Collator(processor, padding=config.text_padding,
                                            pixel_transform=getattr(train_samples, "batch_transform", None)),
            drop_last=True,
            generator=torch.Generator().manual_seed(config.seed),  # iterator creation never touches the global RNG
            persistent_workers=False,
        )
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=config.learning_rate, betas=tuple(config.adam_betas),
                                     eps=config.adam_eps, weight_decay=config.weight_decay)
        # the scheduler counts in the whole data set's batches: under N processes accelerate steps it N times per
        # optimizer step (each process takes one batch in N)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(config, max(len(loader) // config.gradient_accumulation_steps, 1)))
        self.model, self.optimizer, self.loader, self.scheduler = self.accelerator.prepare(
            model, optimizer, loader, scheduler
        )
        # optimizer steps per epoch: of this process's share of the batches (the prepared loader's)
        self.steps_per_epoch = max(len(self.loader) // config.gradient_accumulation_steps, 1)
        # masks draw from their own stream, a function of (seed, process, step): nothing else that uses the global
        # RNG (data-loader iterators, evaluation) can shift them, and a resumed run draws the same masks
        self.masks = MaskStream(config.seed, self.accelerator.process_index)
        self.accelerator.register_for_checkpointing(self.state)
        self.accelerator.register_for_checkpointing(self.masks)
        if self.score_bank is not None:
            self.accelerator.register_for_checkpointing(self.score_bank)
        self.log_file = self.output_dir / "log.jsonl"
        self.initial_temperature = self.encoder().config.temperature

    def temperature_at(self, step: int) -> float:
        """The similarity temperature of optimizer step `step`: the model's own, or with `final_temperature` set, the
        geometric interpolation from it to `final_temperature` over `epochs` x steps per epoch (a function of the
        step alone, so a resumed run anneals as an uninterrupted one; `max_steps` only stops the run early)."""
        start, end = self.initial_temperature, self.config.final_temperature
        if end is None:
            return start
        progress = min(step / max(self.steps_per_epoch * self.config.epochs, 1), 1.0)
        return start * (end / start) ** progress

    def anneal_temperature(self, step: int) -> None:
        """Set the dual encoder's temperature for optimizer step `step` (see `temperature_at`)."""
        if self.config.final_temperature is not None:
            self.encoder().config.temperature = self.temperature_at(step)

    # -- setup helpers ------------------------------------------------------------------------------------

    def _wrap_lora(self, model):
        from peft import LoraConfig, get_peft_model

        c = self.config
        modules_to_save = [m for m in c.lora_modules_to_save if getattr(model, m, None) is not None]
        lora = LoraConfig(r=c.lora_rank, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout,
                          target_modules=c.lora_target_modules, modules_to_save=modules_to_save or None)
        model = get_peft_model(model, lora)
        if self.accelerator.is_main_process:
            trainable, total = model.get_nb_trainable_parameters()
            logger.info("LoRA: %s trainable of %s parameters", f"{trainable:,}", f"{total:,}")
        return model

    def base_model(self) -> GADMSForPreTraining:
        """The GA-DMS pretraining model without the accelerate / DDP / peft wrappers."""
        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def encoder(self) -> GADMSModel:
        """The dual encoder being trained (what validation embeds with)."""
        return self.base_model().gadms

    # -- the score bank -----------------------------------------------------------------------------------

    def previous_scores(self, sample_index: torch.Tensor) -> torch.Tensor | None:
        """The GASS scores of the batch's samples from their previous visit (None without a bank)."""
        if self.score_bank is None:
            return None
        return self.score_bank.get(sample_index)

    def store_scores(self, sample_index: torch.Tensor, token_scores: torch.Tensor | None) -> None:
        """Write the step's new GASS scores into the bank, with every process's: all processes gather the
        `(index, scores)` of all and apply the same update, so that their banks stay identical."""
        if self.score_bank is None or token_scores is None:
            return
        scores = self.score_bank.pad(token_scores)  # captions may be padded to the batch's longest, not to 77
        indices = all_gather_variable(sample_index.to(scores.device))
        scores = all_gather_variable(scores)
        self.score_bank.update(indices.cpu(), scores)

    # -- checkpoints --------------------------------------------------------------------------------------

    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    def save_checkpoint(self) -> Path:
        """Save the full training state to `checkpoints/checkpoint-<step>` (written to a temporary folder, then
        renamed), keeping the last `keep_last`."""
        final = self.checkpoint_dir() / f"checkpoint-{self.state.global_step}"
        temporary = self.checkpoint_dir() / f".tmp-checkpoint-{self.state.global_step}"
        if self.accelerator.is_main_process and temporary.exists():
            shutil.rmtree(temporary)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(temporary))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            temporary.rename(final)
            for old in sorted(self._checkpoints())[: -self.config.keep_last]:
                shutil.rmtree(old[1])
        self.accelerator.wait_for_everyone()
        return final

    def _checkpoints(self) -> list[tuple[int, Path]]:
        if not self.checkpoint_dir().is_dir():
            return []
        found = []
        for path in self.checkpoint_dir().iterdir():
            match = CHECKPOINT_PATTERN.match(path.name)
            if match and path.is_dir():
                found.append((int(match.group(1)), path))
        return sorted(found)

    def resume(self, which: str) -> None:
        """Restore the state of `which`: `"latest"` (the newest checkpoint of this output dir) or a path.

        The checkpoint's optimizer, scheduler, RNG and counter states are pickles that accelerate unpickles
        with `weights_only=False`, so loading one can run code: resume only from folders you trust (your own
        runs). The model weights themselves are safetensors.
        """
        if which == "latest":
            found = self._checkpoints()
            if not found:
                logger.warning("--resume latest: no checkpoint in %s, starting from scratch", self.checkpoint_dir())
                return
            path = found[-1][1]
        else:
            path = Path(which)
            if not path.is_dir():
                raise FileNotFoundError(f"checkpoint to resume from not found: {path}")
        self.accelerator.load_state(str(path))
        logger.info("resumed from %s (epoch %d, step %d)", path, self.state.epoch, self.state.global_step)
        if self.accelerator.is_main_process:
            self._truncate_log(self.state.global_step)
        self.accelerator.wait_for_everyone()

    def _truncate_log(self, step: int) -> None:
        """Drop the records of `log.jsonl` written after the checkpoint resumed from (the steps about to be
        run again), so that the log holds each step once."""
        if not self.log_file.is_file():
            return
        kept = []
        for line in self.log_file.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # the half-written last line of a killed run
                continue
            logged = record.get("step", 0)
            # a validation record at the checkpoint's own step belongs to it only if the validation came before
            # the checkpoint: at the end of an epoch, or at a `max_steps` stop at the same point of the epoch
            at_epoch_point = record.get("step_in_epoch", 0) == self.state.step_in_epoch
            validated_here = self.state.step_in_epoch == 0 or at_epoch_point
            if logged < step or (logged == step and ("loss" in record or validated_here)):
                kept.append(line + "\n")
        temporary = self.log_file.with_name(self.log_file.name + ".tmp")
        temporary.write_text("".join(kept), encoding="utf-8")
        temporary.replace(self.log_file)

    # -- logging ------------------------------------------------------------------------------------------

    def log(self, values: dict) -> None:
        """Log to the trackers (numbers only) and to `log.jsonl` (everything, e.g. the skipped validation files)."""
        numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.accelerator.log(numbers, step=self.state.global_step)
        if self.accelerator.is_main_process:
            with open(self.log_file, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": self.state.global_step, **values}) + "\n")

    # -- evaluation ---------------------------------------------------------------------------------------

    def evaluate(self, split) -> dict:
        """Text-to-image retrieval metrics of the current model on a `RetrievalSplit` (main process)."""
        from .validation import evaluate_split

        return evaluate_split(self.encoder(), self.processor, split, batch_size=self.config.eval_batch_size,
                              device=self.accelerator.device)

    # -- the loop -----------------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Make the data of the next pass over the loader epoch `epoch`'s: sample order and augmentation.

        Set on accelerate's prepared loader, not only on the sampler: the prepared loader calls
        `set_epoch(its own counter)` on the sampler and data set each time it starts iterating, and that counter
        starts at 0 in every new process, so a resumed run would otherwise replay epoch 0's order.
        """
        self.loader.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        self.train_samples.set_epoch(epoch)  # the prepared loader does not forward it with a sharded sampler

    def train(self) -> dict:
        """Train for `config.epochs` (or `max_steps`); evaluate on the validation split each epoch; keep the best."""
        config, accelerator = self.config, self.accelerator
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            config.save(self.output_dir / "training_config.yaml")
        accelerator.init_trackers("gadms", config={k: str(v) for k, v in config.to_dict().items()})
        total_steps = config.max_steps or self.steps_per_epoch * config.epochs
        self.anneal_temperature(self.state.global_step)  # from the step a resumed run starts at; then after each step
        progress = tqdm(total=total_steps, initial=self.state.global_step, disable=not accelerator.is_main_process,
                        desc=f"{config.objective} training", dynamic_ncols=True)
        self.model.train()
        history = []
        done = self.state.global_step >= total_steps
        logged_step, out = self.state.global_step, None
        while not done and self.state.epoch < config.epochs:
            epoch = self.state.epoch
            self.set_epoch(epoch)
            loader = self.loader
            skip = self.state.step_in_epoch * config.gradient_accumulation_steps
            if skip:
                loader = accelerator.skip_first_batches(self.loader, skip)  # keeps the loader's epoch
            started, seen, micro_batch = time.perf_counter(), 0, 0
            for batch in loader:
                skipped = batch.pop("skipped")
                if skipped:
                    self.state.skipped_images += len(skipped)
                    for reason in skipped:
                        logger.warning("skipped unreadable image: %s", reason)
                if "input_ids" not in batch:
                    continue
                generator = self.masks.for_step(self.state.global_step, micro_batch)
                micro_batch += 1
                sample_index = batch.pop("sample_index")
                with accelerator.accumulate(self.model):
                    out = self.model(**batch, token_scores=self.previous_scores(sample_index), generator=generator)
                    self.store_scores(sample_index, out.token_scores)
                    accelerator.backward(out.loss)
                    if config.max_grad_norm and accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
                    lr = self.scheduler.get_last_lr()[0]  # the rate this step uses (logged with it)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                seen += batch["input_ids"].shape[0] * accelerator.num_processes
                if not accelerator.sync_gradients:
                    continue
                micro_batch = 0
                self.state.global_step += 1
                self.state.step_in_epoch += 1
                self.anneal_temperature(self.state.global_step)  # what validation and a saved model see
                progress.update(1)
                rate = seen / max(time.perf_counter() - started, 1e-9)
                progress.set_postfix(loss=f"{out.loss.item():.3f}", lr=f"{lr:.2e}", samples_s=f"{rate:.1f}")
                if self.state.global_step % config.log_every_steps == 0:
                    self.log(self._step_record(out, lr, rate, epoch))
                    logged_step = self.state.global_step
                if config.save_every_steps and self.state.global_step % config.save_every_steps == 0:
                    self.save_checkpoint()
                if self.state.global_step >= total_steps:
                    done = True
                    break
            epoch_over = not done or self.state.step_in_epoch >= self.steps_per_epoch
            run_over = done or (epoch_over and self.state.epoch + 1 >= config.epochs)
            if run_over and logged_step != self.state.global_step and out is not None:
                # the last step's record, whatever log_every_steps: every run leaves a log.jsonl
                self.log(self._step_record(out, lr, rate, epoch))
                logged_step = self.state.global_step
            if epoch_over:
                self.state.epoch += 1
                self.state.step_in_epoch = 0
                history.append(self._end_of_epoch(epoch, final=run_over))
                self.save_checkpoint()
            else:  # stopped mid-epoch by max_steps: validate (best/ as for an epoch), resumable from here
                record = self._end_of_epoch(epoch, final=True)
                history.append(record)
                validated = any(key.startswith("val_") for key in record)
                if validated or self.state.global_step not in {step for step, _ in self._checkpoints()}:
                    self.save_checkpoint()  # (again after validation: the best is part of the state)
        progress.close()
        return {"history": history, "skipped_images": self.state.skipped_images}

    def _step_record(self, out, lr: float, rate: float, epoch: int) -> dict:
        terms = {k: getattr(out, k).item() for k in ("sdm_loss", "mtp_loss", "id_loss", "mlm_loss")
                 if getattr(out, k) is not None}
        annealed = {} if self.config.final_temperature is None else {"temperature": self.encoder().config.temperature}
        return {"loss": out.loss.item(), **terms, "lr": lr, **annealed, "samples_per_s": rate, "epoch": epoch,
                "skipped_images": self.state.skipped_images}

    def _end_of_epoch(self, epoch: int, final: bool = False) -> dict:
        """Validate (every `eval_every_epochs` epochs, and at the end of the run: last epoch or a stop by
        `max_steps`, even mid-epoch) and keep the best model in `best/`."""
        record = {"epoch": epoch}
        if self.state.step_in_epoch:  # stopped mid-epoch: how far into the epoch it validated
            record["step_in_epoch"] = self.state.step_in_epoch
        due = (epoch + 1) % self.config.eval_every_epochs == 0 or final
        if self.eval_split is not None and due:
            metrics = None
            if self.accelerator.is_main_process:
                metrics = self.evaluate(self.eval_split)
            self.accelerator.wait_for_everyone()
            metrics = _broadcast(metrics, self.accelerator)
            record.update({f"val_{k}": v for k, v in metrics.items()})
            if metrics["R1"] > self.state.best_metric:
                self.state.best_metric, self.state.best_epoch = metrics["R1"], epoch
                self.state.best_step = self.state.global_step
                self.save_model(self.output_dir / "best", trained=self._trained(best=True))
        record.update(self._score_bank_noise())
        if set(record) - {"epoch", "step_in_epoch"}:  # validation or score-bank figures to log
            self.log(record)
        return record

    def _score_bank_noise(self) -> dict:
        """Where the training data records clean captions (the synthetic person set): how the score bank ranks
        the noise tokens of the noisy training captions (`bank_auc`, docs/method.md section 13) and how often each
        view of the dual masking masks noise and clean tokens with it (`bank_noise_view_noise`, ...), so that
        a run shows whether its GASS scores find the noise, epoch by epoch. Main process; `{}` otherwise."""
        if self.score_bank is None or not self.accelerator.is_main_process:
            return {}
        if not hasattr(self, "_noisy_samples"):
            self._noisy_samples = None
            pairs = self.train_samples.captions_with_clean()
            if pairs is not None:
                from evaluation.noise_tokens import label_noise_tokens

                chosen = [i for i, (text, clean) in enumerate(zip(*pairs)) if text != clean]
                labels = label_noise_tokens(self.processor, [pairs[0][i] for i in chosen],
                                            [pairs[1][i] for i in chosen])  # once: the captions do not change
                self._noisy_samples = (chosen, labels)
        if not self._noisy_samples or not self._noisy_samples[0]:
            return {}
        from evaluation.noise_tokens import stored_score_report

        indices, labels = self._noisy_samples
        report = stored_score_report(self.score_bank.get(torch.tensor(indices)), self.processor, None, None,
                                     self.base_model().objective, labels=labels)
        return {f"bank_{key}": value for key, value in report.items()}

    # -- exporting ----------------------------------------------------------------------------------------

    def save_model(self, directory: Path, metrics: dict | None = None, merge: bool | None = None,
                   repo_id: str | None = None, trained: str | None = None) -> Path:
        """Save a loadable model directory (weights, processor, code, card); LoRA runs save the adapter, and with
        `merge` (default `config.merge_lora`) also a merged model under `<directory>/merged`.

        The folder is written under a temporary name and renamed; its cards are written for the final name
        (and for `repo_id`, the hub repo it will be pushed to). An adapter names its base model the way the
        hub would (`base_model_name_or_path`: the hub id, or the local folder relative to the adapter's),
        and holds the trained identity classifier (`lora_modules_to_save`)."""
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        directory = Path(directory)
        if accelerator.is_main_process:
            temporary = directory.with_name(f".tmp-{directory.name}")
            if temporary.exists():
                shutil.rmtree(temporary)
            model = accelerator.unwrap_model(self.model)
            model.save_pretrained(temporary)
            self.processor.save_pretrained(temporary)
            merged = bool(self.config.lora and (self.config.merge_lora if merge is None else merge))
            if merged:
                _merged_copy(model).save_pretrained(temporary / "merged")
                self.processor.save_pretrained(temporary / "merged")
            if self.config.lora:
                from .card import relative_base

                config_file = temporary / "adapter_config.json"
                adapter_config = json.loads(config_file.read_text(encoding="utf-8"))
                adapter_config["base_model_name_or_path"] = relative_base(self.config.model, directory)
                config_file.write_text(json.dumps(adapter_config, indent=2, sort_keys=True), encoding="utf-8")
            self._write_cards(temporary, directory, metrics, repo_id=repo_id, trained=trained)
            if directory.exists():
                shutil.rmtree(directory)
            temporary.rename(directory)
        accelerator.wait_for_everyone()
        return directory

    def _trained(self, best: bool = False) -> str:
        """What a saved model was trained for, for its card: optimizer steps and epochs (`max_steps` may stop a run
        before its `epochs`), and for the best-on-validation model the epoch it was chosen at."""
        step = self.state.best_step if best else self.state.global_step
        epochs = step / self.steps_per_epoch
        text = f"{step} steps ({epochs:.3g} of {self.config.epochs} epochs)"
        if best:
            text += f", chosen on validation R@1 in epoch {self.state.best_epoch + 1}"
        return text

    def _write_cards(self, folder: Path, final: Path, metrics: dict | None,
                     repo_id: str | None = None, trained: str | None = None) -> None:
        """The model cards of a saved folder (`folder`, to be `final`): the model's, or the adapter's and its
        merged copy's."""
        from .card import relative_base, write_model_card

        if (folder / "merged").is_dir():
            write_model_card(folder / "merged", self.config, metrics, repo_id=repo_id,
                             final_directory=final / "merged", trained=trained)
        if not self.config.lora:
            write_model_card(folder, self.config, metrics, repo_id=repo_id, final_directory=final, trained=trained)
            return
        model = self.accelerator.unwrap_model(self.model)
        saved = set(getattr(model.peft_config.get("default"), "modules_to_save", None) or [])
        classifier = self.base_model().classifier
        num_identities = classifier.out_features if classifier is not None and "classifier" in saved else 0
        write_model_card(folder, self.config, metrics, repo_id=repo_id, final_directory=final,
                         base_model=relative_base(self.config.model, final), num_identities=num_identities,
                         merged=(folder / "merged").is_dir(), trained=trained)

    def _score_bank_consistency(self) -> dict:
        """Digests of every process's score bank (identical when the per-step gathers kept them in sync)."""
        if self.score_bank is None:
            return {}
        from accelerate.utils import gather_object

        digests = gather_object([_bank_digest(self.score_bank)])
        updated = int(self.score_bank.visited.sum())
        return {"score_bank_digests": digests, "score_bank_updated_rows": updated}

    def finish(self) -> dict:
        """After training: save the last model, evaluate last and best on the test split, write the cards."""
        results = {}
        last_dir = self.output_dir / "last"
        test_metrics = None
        if self.test_split is not None and self.accelerator.is_main_process:
            test_metrics = self.evaluate(self.test_split)
        results["last"] = test_metrics
        self.save_model(last_dir, metrics=test_metrics, repo_id=self.config.push_to_hub, trained=self._trained())
        best_dir = self.output_dir / "best"
        if self.test_split is not None and best_dir.is_dir() and self.accelerator.is_main_process:
            from .validation import load_for_evaluation, evaluate_split

            best_model = load_for_evaluation(best_dir, self.config).to(self.accelerator.device)
            results["best"] = evaluate_split(best_model, self.processor, self.test_split,
                                             batch_size=self.config.eval_batch_size, device=self.accelerator.device)
            self._write_cards(best_dir, best_dir, results["best"], trained=self._trained(best=True))
        consistency = self._score_bank_consistency()
        if self.accelerator.is_main_process:
            summary = {**results, "best_epoch": self.state.best_epoch, "skipped_images": self.state.skipped_images,
                       **consistency}
            (self.output_dir / "results.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        if self.config.push_to_hub and self.accelerator.is_main_process:
            from .hub import push_model

            push_model(last_dir, self.config.push_to_hub, private=self.config.hub_private)
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()  # closes the trackers (and the process group): last call of a run
        return results


def _bank_digest(bank) -> str:
    return hashlib.sha1(bank.scores.cpu().numpy().tobytes()).hexdigest()


def _merged_copy(peft_model):
    import copy

    return copy.deepcopy(peft_model).merge_and_unload()


def _broadcast(value, accelerator):
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


__all__ = [
    "MaskStream", "TrainState", "Trainer", "TrainingSetupError", "build_model", "warmup_cosine", "words_of",
]
