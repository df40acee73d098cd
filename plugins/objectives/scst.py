"""``scst``: self-critical sequence training (Rennie et al. 2017), with the "new self-critical" baseline.

Each step, for the batch's distinct images:

1. **Rollouts** without gradient: ``sample_n`` captions per image from the model
   (``zoo.generation.sample``: multinomial at ``temperature``, up to ``max_len`` tokens), from this
   objective's own random generator (saved in the training state, so a resumed run draws the same).
2. **Reward**: CIDEr-D of every sample against its image's training references, on token ids, with
   document frequencies from all training references (``zoo.training.reward.CiderReward``, built once per run);
   <eos> counts as a word (``eos``). Optionally plus ``bleu4_weight`` × sentence BLEU-4.
   ``reference_convention`` says how the training captions become references and frequencies: ``zoo``
   (every reference cut at ``train.max_caption_len`` with its <eos>, frequencies over those) or
   ``ruotianluo`` (as self-critical.pytorch, whose numbers the field quotes: <eos> only on references
   shorter than the cut, frequencies over the uncut captions); ``zoo.training.reward.CONVENTIONS``.
3. **Baseline**: ``mean`` (NSC, the default): each sample's baseline is the mean reward of its image's
   *other* samples (leave-one-out, so it does not depend on the sample itself and the gradient stays
   unbiased); ``greedy`` (SCST): the reward of the image's greedy caption.
4. **Loss**: one teacher-forced pass over the sampled sequences through ``CaptionModel.forward(...,
   keep=mask)`` gives log p(w_t) with gradient for every sampled token including <eos>; the loss is
   −Σ (r − b) · log p(w_t) / (number of sampled tokens). Any decoder that meets the contract trains
   unchanged.

Both passes run the model in eval mode (no dropout; batch norm on its running statistics), so the
teacher-forced pass computes exactly the log-probabilities of the distribution that drew the samples: the
gradient is the one back-propagating through the sampling loop would give (see ``docs/scst.md``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import zoo
from zoo.contracts import Features, select_batch
from zoo.errors import ZooError
from zoo.runtime import distributed as dist
from zoo.training.objective import (
    Objective,
    ObjectiveBatch,
    ObjectiveContext,
    ObjectiveOptionError,
    StepOutput,
    check_choice,
    check_number,
    format_signature,
)
from zoo.training.reward import CONVENTIONS, CiderReward, bleu4, split_rows


def leave_one_out_mean(rewards: np.ndarray, n: int) -> np.ndarray:
    """NSC baseline: for rewards grouped ``n`` per image (rows i*n .. i*n+n-1), each one's baseline is the
    mean of the other ``n - 1`` of its image."""
    r = rewards.reshape(-1, n)
    return ((r.sum(1, keepdims=True) - r) / (n - 1)).reshape(-1)


def within_image_std(rewards: np.ndarray, n: int) -> float:
    """The spread of rewards grouped ``n`` per image around their image's mean (pooled standard
    deviation): what a baseline leaves for the gradient. Near 0, an image's samples are all alike and
    SCST has nothing left to learn from (``curves.png`` draws it as a band around the mean reward)."""
    r = rewards.reshape(-1, n)
    return float(np.sqrt(np.mean((r - r.mean(1, keepdims=True)) ** 2)))


BASELINES = ("mean", "greedy")
DEFAULTS = {"sample_n": 5, "max_len": 16, "baseline": "mean", "temperature": 1.0, "cider_weight": 1.0,
            "bleu4_weight": 0.0, "eos": True, "reference_convention": "zoo"}


class SelfCritical(Objective):
    """Self-critical sequence training: REINFORCE with CIDEr-D reward and a self-critical baseline.

    Options: ``sample_n`` captions sampled per image (5), ``max_len`` tokens per sample (16),
    ``baseline`` mean (NSC: mean reward of the image's other samples) or greedy (reward of the greedy
    caption), ``temperature`` of the sampling (1), ``cider_weight`` (1) and ``bleu4_weight`` (0) of the
    reward's terms, ``eos`` (true: <eos> counts as a word in the reward), ``reference_convention`` zoo
    (references cut at ``train.max_caption_len``, each with <eos>; frequencies over them) or ruotianluo
    (self-critical.pytorch's: <eos> only on references shorter than the cut; frequencies over the uncut
    captions), shown in the signature as ``refs=ruotianluo`` when not the default."""

    name = "scst"

    def __init__(self, sample_n: int = 5, max_len: int = 16, baseline: str = "mean", temperature: float = 1.0,
                 cider_weight: float = 1.0, bleu4_weight: float = 0.0, eos: bool = True,
                 reference_convention: str = "zoo") -> None:
        super().__init__()
        self.sample_n = check_number("sample_n", sample_n, lambda v: v >= 1, "an integer ≥ 1", 5, integer=True)
        self.max_len = check_number("max_len", max_len, lambda v: v >= 1, "an integer ≥ 1 (tokens)", 16, integer=True)
        check_choice("baseline", baseline, BASELINES, "mean")
        self.baseline = baseline
        if baseline == "mean" and self.sample_n < 2:
            raise ObjectiveOptionError(
                f"objective option objective.sample_n={sample_n}: baseline=mean (the mean reward of an image's "
                "other samples) needs sample_n ≥ 2; raise it, or use objective.baseline=greedy"
            )
        self.temperature = check_number("temperature", temperature, lambda v: 0 < v < float("inf"), "a number > 0", 1.0)
        finite = lambda v: v >= 0 and v < float("inf")  # noqa: E731
        self.cider_weight = check_number("cider_weight", cider_weight, finite, "a number ≥ 0", 1.0)
        self.bleu4_weight = check_number("bleu4_weight", bleu4_weight, finite, "a number ≥ 0", 0.0)
        if self.cider_weight == 0 and self.bleu4_weight == 0:
            raise ObjectiveOptionError("objective options objective.cider_weight and objective.bleu4_weight are both 0: "
                                       "the reward would be 0 for every caption; give one of them a weight > 0")
        if not isinstance(eos, bool):
            raise ObjectiveOptionError(f"objective option objective.eos must be true or false, got {eos!r} (default true)")
        self.eos = eos
        check_choice("reference_convention", reference_convention, CONVENTIONS, "zoo")
        self.reference_convention = reference_convention
        self.reward: CiderReward | None = None
        self.generator: torch.Generator | None = None
        self._tokenizer: Any = None

    def options(self) -> dict[str, Any]:
        return {"sample_n": self.sample_n, "max_len": self.max_len, "baseline": self.baseline,
                "temperature": self.temperature, "cider_weight": self.cider_weight,
                "bleu4_weight": self.bleu4_weight, "eos": self.eos, "reference_convention": self.reference_convention}

    def signature(self) -> str:
        """``scst(cider-d, baseline=mean, n=5, df=train, eos=yes)``; other options when not default
        (``refs=ruotianluo``: the reference convention, which moves a reward by up to ~0.2)."""
        terms = []
        if self.cider_weight:
            terms.append("cider-d" if self.cider_weight == 1 else f"{self.cider_weight:g}*cider-d")
        if self.bleu4_weight:
            terms.append(f"{self.bleu4_weight:g}*bleu-4")
        shown: dict[str, Any] = {"baseline": self.baseline, "n": self.sample_n, "df": "train", "eos": self.eos}
        if self.max_len != DEFAULTS["max_len"]:
            shown["max_len"] = self.max_len
        if self.temperature != DEFAULTS["temperature"]:
            shown["temperature"] = f"{self.temperature:g}"
        if self.reference_convention != DEFAULTS["reference_convention"]:
            shown["refs"] = self.reference_convention
        inner = format_signature("", shown)[1:-1]
        return f"scst({'+'.join(terms)}, {inner})"

    # -- a run ------------------------------------------------------------------------------------------
    def setup(self, context: ObjectiveContext) -> None:
        tok = context.tokenizer
        self._tokenizer = tok
        words = list(tok.words) if isinstance(getattr(tok, "words", None), (list, tuple)) else None
        conv = CONVENTIONS[self.reference_convention]
        full = max_len = None
        if conv.df_uncut or not conv.eos_at_limit:
            full, max_len = _uncut_pairs(context), int(context.cfg.max_caption_len)
        self.reward = CiderReward.from_pairs(context.pair_tokens, context.pair_images, pad_id=tok.pad_id,
                                             eos_id=tok.eos_id, vocab_size=tok.vocab_size, eos=self.eos, words=words,
                                             convention=self.reference_convention, full_tokens=full, max_len=max_len)
        if context.world_size > 1:  # the reward must mean the same on every rank
            digests = dist.all_gather_object(self.reward.digest())
            if len(set(digests)) != 1:
                raise ZooError("scst: the reward's document frequencies differ between ranks (their training "
                               "references differ); every rank must load the same training split")
        self.generator = torch.Generator(device=context.device)
        self.generator.manual_seed(int(context.cfg.seed) * 1_000_003 + 7919 * (context.rank + 1))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()} if self.generator is not None else {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])

    # -- a step -----------------------------------------------------------------------------------------
    def rewards(self, tokens: torch.Tensor, lengths: torch.Tensor, images: np.ndarray) -> np.ndarray:
        """The reward of each sampled row (``tokens``/``lengths`` as ``zoo.generation.sample`` returns
        them; ``images`` the training-set image of each row)."""
        assert self.reward is not None, "setup() first"
        lengths = lengths.clone()
        if not self.eos:
            last = tokens.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
            lengths -= (last == self._tokenizer.eos_id).long()
        ids, n = split_rows(tokens, lengths)
        total = np.zeros(len(n))
        if self.cider_weight:
            total += self.cider_weight * self.reward(ids, n, images)
        if self.bleu4_weight:
            starts = np.cumsum(n) - n
            cands = [ids[s: s + k] for s, k in zip(starts, n)]
            refs = [self.reward.references(int(i)) for i in images]
            total += self.bleu4_weight * bleu4(cands, refs)
        return total

    def step(self, model: Any, net: torch.nn.Module, batch: ObjectiveBatch) -> StepOutput:
        tok = model.tokenizer
        images = batch.images.cpu().numpy()
        uniq, first = np.unique(images, return_index=True)  # one rollout group per distinct image
        rows = torch.as_tensor(first, dtype=torch.long, device=_device(batch.inputs))
        inputs = select_batch(batch.inputs, rows)
        n = self.sample_n
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                feats = inputs if isinstance(inputs, Features) else model.encode(inputs)
                # through the model, so that a failure inside the decoder's plugin names it (CaptionModel.blamed)
                s = model.generate_samples(feats, n=n, max_len=self.max_len, temperature=self.temperature,
                                           generator=self.generator)
                if self.baseline == "greedy":
                    g = model.generate_samples(feats, n=1, max_len=self.max_len, top_k=1)
            row_images = np.repeat(uniq, n)
            r = self.rewards(s.tokens, s.lengths, row_images)
            if self.baseline == "mean":
                b = leave_one_out_mean(r, n)
            else:
                b = np.repeat(self.rewards(g.tokens, g.lengths, uniq), n)
            loss = self_critical_loss(model, net, inputs, s.tokens, s.lengths, r - b, n, tok.bos_id)
        finally:
            model.train(was_training)
        logs = {"reward": float(r.mean()), "reward_std": within_image_std(r, n),
                "sample_len": float(s.lengths.float().mean())}
        if self.baseline != "mean":  # NSC's baseline averages to the mean reward exactly: nothing to log
            logs["baseline"] = float(b.mean())
        return StepOutput(loss, logs)


def self_critical_loss(model: Any, net: torch.nn.Module, inputs: Any, tokens: torch.Tensor, lengths: torch.Tensor,
                       advantage: np.ndarray, n: int, bos_id: int) -> torch.Tensor:
    """−Σ (r − b) · log p(w_t) over every sampled token (its <eos> included) / number of tokens, with
    log p from ONE teacher-forced pass over the samples (``net(inputs, <bos>+tokens[:-1], keep)``); the
    inputs of image i feed its ``n`` sample rows."""
    R, L = tokens.shape
    device = tokens.device
    expand = torch.arange(R // n, device=_device(inputs)).repeat_interleave(n)
    rows = select_batch(inputs, expand)
    prev = torch.cat([torch.full((R, 1), bos_id, dtype=torch.long, device=device), tokens[:, :-1]], dim=1)
    keep = torch.arange(L, device=device).unsqueeze(0) < lengths.unsqueeze(1)
    with model.blamed("decoder", "scoring sampled captions (teacher-forced forward)"):
        logits = net(rows, prev, keep)  # (K, V): the sampled positions only, row-major
    logp = torch.log_softmax(logits.float(), dim=-1).gather(1, tokens[keep].unsqueeze(1)).squeeze(1)
    adv = torch.as_tensor(advantage, dtype=torch.float32, device=device)
    weight = adv.repeat_interleave(lengths.to(device))
    return -(weight * logp).sum() / keep.sum().clamp(min=1)


def _uncut_pairs(context: ObjectiveContext) -> torch.Tensor:
    """The training pairs tokenised without the cut, rows in the loop's order (``zoo.training.pairs``:
    each image's captions in turn): what the ``ruotianluo`` convention counts frequencies over."""
    texts = [c for item in context.train_set for c in item.captions] if context.train_set is not None else []
    if len(texts) != len(context.pair_tokens):
        raise ZooError(f"scst: reference_convention=ruotianluo needs the training captions uncut, but the training "
                       f"set gives {len(texts)} captions for {len(context.pair_tokens)} (image, caption) pairs")
    return context.tokenizer.batch_encode(texts)


def _device(x: Any) -> torch.device:
    return x.grid.device if isinstance(x, Features) else x.device


@zoo.hookimpl
def zoo_register(registry: Any) -> None:
    registry.add_objective("scst", SelfCritical)
