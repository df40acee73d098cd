"""The decoder contract (``zoo.contracts.decoder``), checked once where a decoder is built, on a tiny probe batch.

Why: a decoder that breaks the contract used to decode silently wrong ((B, 1, V) logits, (B, V - 1)),
end in a bare ``IndexError`` inside the beam search ((B, V + 5) at beam 3) or a reshape error ((V, B)),
and in training it surfaced only at the first validation. ``zoo.create_decoder`` (and so
``zoo.create_model``, ``zoo.load``, ``zoo train``, ``zoo compare``, ``zoo eval``, ``zoo caption``) runs
:func:`check_decoder_contract` on every decoder it builds, before any training step or decoding: a
violation is a :class:`ContractError` naming the plugin, the method, the shape expected and the shape got.

The probe is B=3 images of N=5 grid positions and T=4 tokens (sizes that differ from each other and from
typical vocabulary, layer and head counts, so a swapped axis shows), run without gradient, in eval mode,
under a forked random state: it leaves the decoder's modes, its parameters and every RNG stream
(torch, CUDA, numpy, Python) exactly as they were, so a run trains the same with or without it.
It calls ``forward`` (and ``forward(..., keep=)`` for ``skips_padding``), ``prepare``, ``init_state``,
``step``, ``last_attention`` (for ``attends``: weights that sum to 1 over the grid), then expands every image
to 3 rows as beam 3 does (``select_batch`` on the memory, ``reorder_state`` on the state) and steps again,
then gathers those 9 rows into 33 (a larger batch at beam 3: above the 8, 16 or 32 rows a fixed-size
buffer might hold) and steps once more, checking the shapes and the attention each time.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

from zoo.contracts.decoder import Decoder
from zoo.contracts.features import Features, select_batch
from zoo.errors import ContractError, ZooError

PROBE_BATCH, PROBE_GRID, PROBE_LEN = 3, 5, 4
PROBE_BEAM, PROBE_ROWS = 3, 33
DOCS = "See 'The decoder contract' in docs/plugins.md."

__all__ = ["ContractError", "check_attention", "check_decoder_contract", "check_step_logits", "isolated"]


def _shape(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"shape {tuple(x.shape)}"
    return f"a {type(x).__name__}, not a tensor"


def _fail(label: str, method: str, message: str) -> ContractError:
    return ContractError(f"decoder {label} breaks the decoder contract: {method} {message}. {DOCS}")


def check_logits(label: str, method: str, logits: Any, expected: tuple[int, ...], meaning: str) -> None:
    """``logits`` is a tensor of shape ``expected``; else a ContractError naming the method and both shapes."""
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        raise _fail(label, method, f"returned logits of {_shape(logits)}; expected {expected} = {meaning}")


def check_step_logits(decoder: Decoder, logits: Any, rows: int) -> None:
    """The guard decoding keeps on every ``step``: (rows, V) logits, or a ContractError (never an
    ``IndexError`` deep in the beam search). One shape comparison per step."""
    vocab = getattr(decoder, "vocab_size", None)
    if isinstance(logits, torch.Tensor) and logits.dim() == 2 and logits.shape[0] == rows and (
        vocab is None or logits.shape[1] == vocab
    ):
        return
    check_logits(repr(type(decoder).__name__), "step(prev_tokens, state, memory)", logits,
                 (rows, vocab if vocab is not None else -1), f"(B, V): one row per prev_token, V={vocab}")


def _leaves(tree: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(path, leaf) for every leaf ``select_batch`` would visit; Features show their grid and pooled."""
    if tree is None:
        return
    if isinstance(tree, torch.Tensor):
        yield path, tree
    elif isinstance(tree, Features):
        yield f"{path}.grid", tree.grid
        yield f"{path}.pooled", tree.pooled
    elif isinstance(tree, (tuple, list)):
        for i, t in enumerate(tree):
            yield from _leaves(t, f"{path}[{i}]")
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{path}[{k!r}]")
    elif not hasattr(tree, "index_select"):
        yield path, tree


def check_batch_first(label: str, method: str, tree: Any, what: str, batch: int, fix: str) -> None:
    """Every tensor in ``tree`` has the batch first (what ``select_batch`` reorders), and nothing else
    is in it that ``select_batch`` cannot take rows of."""
    for path, leaf in _leaves(tree, what):
        if not isinstance(leaf, torch.Tensor):
            raise _fail(label, method, f"returned {what} holding {type(leaf).__name__} at {path}, which the "
                        f"beam search cannot take rows of; use tensors (batch first), tuples, lists, dicts or None")
        if leaf.dim() == 0 or leaf.shape[0] != batch:
            raise _fail(label, method, f"returned {what} whose tensor {path} has shape {tuple(leaf.shape)}; "
                        f"expected the batch ({batch}) first, i.e. ({batch}, ...). {fix}")


@contextmanager
def isolated(module: torch.nn.Module) -> Iterator[None]:
    """No gradient, eval mode, forked RNGs; afterwards every submodule's mode and every RNG stream is
    exactly as before (the probe must not change what a run trains)."""
    modes = [(m, m.training) for m in module.modules()]
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            module.eval()
            yield
    finally:
        for m, mode in modes:
            m.training = mode
        random.setstate(py_state)
        np.random.set_state(np_state)


def _call(label: str, method: str, fn: Any, *args: Any, rows: int = PROBE_BATCH, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; an exception from it is a ContractError naming the decoder, its plugin (in
    ``label``), the method and the number of rows it was called with."""
    try:
        return fn(*args, **kwargs)
    except ZooError:
        raise
    except Exception as exc:
        batch = (f"B={rows} rows: {PROBE_BATCH} images expanded as the beam search does" if rows != PROBE_BATCH
                 else f"B={PROBE_BATCH} images")
        raise ContractError(
            f"decoder {label}: {method} raised {type(exc).__name__}: {exc}, on the contract probe ({batch}, grid "
            f"(B, {PROBE_GRID}, C), tokens (B, {PROBE_LEN})). {DOCS} Run with --debug (or ZOO_DEBUG=1) for the "
            f"traceback."
        ) from exc


def check_decoder_contract(decoder: Decoder, label: str | None = None) -> None:
    """Run the probe (see the module docstring); ``label`` names the decoder and its plugin in errors."""
    label = label or repr(type(decoder).__name__)
    B, N, T = PROBE_BATCH, PROBE_GRID, PROBE_LEN
    V, C = decoder.vocab_size, decoder.feature_dim
    ref = next(iter(decoder.parameters()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    g = torch.Generator().manual_seed(0)
    grid = torch.randn(B, N, C, generator=g).to(device, dtype)
    feats = Features(grid, grid.mean(1))
    tokens = torch.randint(4 if V > 4 else 0, V, (B, T), generator=g).to(device)
    tokens[:, 0] = 1  # <bos>
    default_reorder = type(decoder).reorder_state is Decoder.reorder_state
    state_fix = "Keep the state batch-first (e.g. h.transpose(0, 1) for an nn.GRU hidden state) or override reorder_state."
    with isolated(decoder):
        out = _call(label, "forward(features, tokens)", decoder, feats, tokens)
        check_logits(label, "forward(features, tokens)", out, (B, T, V),
                     f"(B, T, V) for tokens (B, T) = ({B}, {T}): logits at t predict token t + 1, V={V}")
        if decoder.skips_padding:  # row i keeps T - i positions, a prefix, as CaptionModel.loss passes it
            keep = torch.arange(T, device=device).unsqueeze(0) < (T - torch.arange(B, device=device)).unsqueeze(1)
            K = int(keep.sum())
            out = _call(label, "forward(features, tokens, keep=mask)", decoder, feats, tokens, keep=keep)
            check_logits(label, "forward(features, tokens, keep=mask)", out, (K, V),
                         f"(K, V) for the K={K} True positions of keep (skips_padding = True), V={V}")
        memory = _call(label, "prepare(features)", decoder.prepare, feats)
        check_batch_first(label, "prepare(features)", memory, "memory", B,
                          "The beam search expands and drops rows of the memory with select_batch.")
        state = _call(label, "init_state(memory)", decoder.init_state, memory)
        if default_reorder:
            check_batch_first(label, "init_state(memory)", state, "state", B, state_fix)
        prev = torch.full((B,), 1, dtype=torch.long, device=device)
        result = _call(label, "step(prev_tokens, state, memory)", decoder.step, prev, state, memory)
        if not isinstance(result, tuple) or len(result) != 2:
            raise _fail(label, "step(prev_tokens, state, memory)",
                        f"returned {type(result).__name__}; expected a pair (logits (B, V), new state)")
        logits, state = result
        check_logits(label, "step(prev_tokens, state, memory)", logits, (B, V),
                     f"(B, V) for prev_tokens (B,) = ({B},): one row of next-token logits per image, V={V}")
        if default_reorder:
            check_batch_first(label, "step(prev_tokens, state, memory)", state, "state", B, state_fix)
        check_attention(label, decoder, state, B, N)
        # as the beam search does: every image expanded to PROBE_BEAM rows, one step; then rows gathered as
        # a larger batch at that beam would have them (PROBE_ROWS, above the 8, 16 and 32 rows a fixed-size
        # buffer might hold), one more step
        expansions = (
            ("the beam search expanded each image {beam} times", torch.arange(B, device=device).repeat_interleave(PROBE_BEAM)),
            ("rows were gathered as {rows} beams (a larger batch at beam {beam})", torch.arange(PROBE_ROWS, device=device) % (B * PROBE_BEAM)),
        )
        for why, rows in expansions:
            n = len(rows)
            memory = _call(label, "prepare(features) (select_batch of its output)", select_batch, memory, rows, rows=n)
            state = _call(label, "reorder_state(state, index)", decoder.reorder_state, state, rows, rows=n)
            prev = prev.index_select(0, rows)
            result = _call(label, "step(prev_tokens, state, memory) after reorder_state", decoder.step, prev, state,
                           memory, rows=n)
            if not isinstance(result, tuple) or len(result) != 2:
                raise _fail(label, "step(prev_tokens, state, memory) after reorder_state",
                            f"returned {type(result).__name__}; expected a pair (logits (B, V), new state)")
            logits, state = result
            check_logits(label, "step(prev_tokens, state, memory) after reorder_state", logits, (n, V),
                         f"(B, V) with B={n} rows after {why.format(beam=PROBE_BEAM, rows=n)}, V={V}")
            if default_reorder:
                check_batch_first(label, "step(prev_tokens, state, memory) after reorder_state", state, "state", n,
                                  state_fix)
            check_attention(label, decoder, state, n, N)


def check_attention(label: str, decoder: Decoder, state: Any, rows: int, positions: int) -> None:
    """For a decoder that ``attends``: ``last_attention(state)`` is (rows, N) weights, finite, >= 0, each
    row summing to 1 over the N grid positions (the beam search keeps them, the attention figures and the
    report draw them as a distribution: weights that sum to 0.33 drew panels saying "max 0.33")."""
    if not getattr(decoder, "attends", False):
        return
    alpha = _call(label, "last_attention(state)", decoder.last_attention, state, rows=rows)
    check_logits(label, "last_attention(state)", alpha, (rows, positions),
                 f"(B, N): weights over the N={positions} grid positions (attends = True)")
    weights = alpha.detach().double()
    tol = 1e-2 if alpha.dtype in (torch.float16, torch.bfloat16) else 1e-3
    sums = weights.sum(-1)
    if not bool(torch.isfinite(weights).all()) or bool((weights < -tol).any()) or bool(((sums - 1).abs() > tol).any()):
        raise _fail(label, "last_attention(state)",
                    f"returned weights that are not a distribution over the N={positions} grid positions: each row "
                    f"must be finite, >= 0 and sum to 1, but the row sums run from {float(sums.min()):.4g} to "
                    f"{float(sums.max()):.4g} (smallest weight {float(weights.min()):.4g}). The beam search, "
                    f"`zoo caption --attention` and the report draw them as one; normalise them over the positions "
                    f"(a softmax over N)")
