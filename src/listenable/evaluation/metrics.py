"""Faithfulness and complexity of an explanation: pure, batched torch functions.

Notation (DESIGN §4): ``p`` = softmax, ``c`` = the explained class, ``M`` = the mask on the
linear STFT grid. "``M ⊙ x``" means: multiply the complex STFT of every channel by ``M``
(phase kept), invert it, and run the *whole* pipeline again (STFT → features → model) on
that audio (:func:`masked_probabilities`, :func:`pipeline_probabilities`).

Every metric returns one value per clip (``reduction="none"``) or their mean
(``reduction="mean"``, the default); the data-set score is the mean over clips.

* ``AI  = 𝟙[p_c(x) < p_c(M⊙x)] · 100``                      (average increase, ↑)
* ``AD  = relu(p_c(x) − p_c(M⊙x)) / p_c(x) · 100``          (average drop, ↓)
* ``AG  = relu(p_c(M⊙x) − p_c(x)) / (1 − p_c(x)) · 100``    (average gain, ↑)
* ``FF  = p_c(x) − p_c((1−M)⊙x)``, in probability units       (faithfulness, ↑)
* ``Fid-In = 𝟙[argmax p(M⊙x) = argmax p(x)]``, in [0, 1]      (input fidelity, ↑)
* ``SPS``: Gini index of ``|M|`` (Quantus ``Sparseness`` with its defaults, as L-MAC's
  recipe calls it): ``|M|`` divided by its maximum (Quantus' ``normalise_by_max``, per
  clip), then with the ``n`` values sorted ascending, ``Σ_i (2i − n − 1) a_i / (n Σ a_i)``,
  ``a = |M| / max|M| + 1e-7`` (Quantus' epsilon, so an all-zero map counts as uniform: 0).
                                                                (sparseness, ↑)
* ``COMP``: entropy (natural log) of ``|M| / Σ|M|`` (Quantus ``Complexity``); an all-zero
  map counts as uniform (``log n``; Quantus refuses such a map). (complexity, ↓)
* Deletion / insertion (RISE, Petsiuk et al. 2018) over the TF bins: :func:`deletion_insertion`.

Where the mask is applied (``apply_to``, :data:`APPLY_TO`): ``"audio"`` (the default, the
definition above: mask the STFT, invert, run the whole pipeline again) or ``"features"``
(the classifier's input spectrum: the front end's features are computed straight from the
masked listening STFT, ``|M ⊙ X|^power`` before the filterbank, without the inverse STFT;
only for models whose front end :meth:`~listenable.frontends.FrontEnd.shares_stft` with
the listening STFT, see :func:`check_apply_to`).

The floor every metric is read against: :func:`shuffle_bins` permutes a mask's values over
the TF bins of each clip (same values, same area, no location).

Shapes:
    probabilities          (batch, n_classes)  or, for p_c, (batch,)
    spectrum               (batch, channels, freq_bins, frames)   complex
    mask, attribution      (batch, freq_bins, frames)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from listenable.masking import apply_mask

__all__ = [
    "average_increase",
    "average_drop",
    "average_gain",
    "faithfulness",
    "fid_in",
    "sparseness",
    "complexity",
    "model_probabilities",
    "pipeline_probabilities",
    "masked_probabilities",
    "deletion_insertion",
    "DeletionInsertion",
    "BASELINES",
    "baseline_spectrum",
    "attribution_ranks",
    "APPLY_TO",
    "check_apply_to",
    "shuffle_bins",
]

#: What a removed TF bin becomes, and where insertion starts (see :func:`deletion_insertion`).
BASELINES = ("zero", "blur")
#: Where a mask is applied for the re-run (see the module docstring).
APPLY_TO = ("audio", "features")
_EPS = 1e-12


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return values
    if reduction == "mean":
        return values.mean()
    raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")


def _class_probability(p: torch.Tensor) -> torch.Tensor:
    if p.ndim != 1:
        raise ValueError(f"expected p_c of shape (batch,), got {tuple(p.shape)}")
    return p.double()


def average_increase(
    p_x: torch.Tensor, p_masked: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    """AI: ``100 · 𝟙[p_c(x) < p_c(M⊙x)]``; ``p_x``, ``p_masked`` are ``p_c`` values ``(batch,)``."""
    p_x, p_masked = _class_probability(p_x), _class_probability(p_masked)
    return _reduce(100.0 * (p_x < p_masked).double(), reduction)


def average_drop(
    p_x: torch.Tensor, p_masked: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    """AD: ``100 · relu(p_c(x) − p_c(M⊙x)) / p_c(x)``."""
    p_x, p_masked = _class_probability(p_x), _class_probability(p_masked)
    return _reduce(100.0 * torch.relu(p_x - p_masked) / p_x.clamp_min(_EPS), reduction)


def average_gain(
    p_x: torch.Tensor, p_masked: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    """AG: ``100 · relu(p_c(M⊙x) − p_c(x)) / (1 − p_c(x))``."""
    p_x, p_masked = _class_probability(p_x), _class_probability(p_masked)
    return _reduce(100.0 * torch.relu(p_masked - p_x) / (1.0 - p_x).clamp_min(_EPS), reduction)


def faithfulness(
    p_x: torch.Tensor, p_inverse: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    """FF: ``p_c(x) − p_c((1−M)⊙x)``: how much the class loses when the mask is removed."""
    p_x, p_inverse = _class_probability(p_x), _class_probability(p_inverse)
    return _reduce(p_x - p_inverse, reduction)


def fid_in(
    probs_x: torch.Tensor, probs_masked: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    """Fid-In: ``𝟙[argmax p(M⊙x) = argmax p(x)]``; full probability vectors ``(batch, n_classes)``."""
    if probs_x.ndim != 2 or probs_x.shape != probs_masked.shape:
        raise ValueError(
            f"expected two (batch, n_classes) tensors, got {tuple(probs_x.shape)} and "
            f"{tuple(probs_masked.shape)}"
        )
    same = probs_x.argmax(dim=1) == probs_masked.argmax(dim=1)
    return _reduce(same.double(), reduction)


def sparseness(mask: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """SPS: Gini index of ``|mask|`` per clip, ``(batch, ...)`` → ``(batch,)``; 0 = uniform,
    → 1 = all weight on one bin (Quantus ``Sparseness``, Chalasani et al. 2020: each clip
    divided by its maximum first, then Quantus' ``1e-7`` added)."""
    a = mask.detach().flatten(1).abs().double()
    peak = a.amax(dim=1, keepdim=True)
    a = torch.where(peak > 0, a / torch.where(peak > 0, peak, 1.0), a) + 1e-7
    a, _ = a.sort(dim=1)
    n = a.shape[1]
    i = torch.arange(1, n + 1, dtype=torch.float64, device=a.device)
    gini = ((2 * i - n - 1) * a).sum(dim=1) / (n * a.sum(dim=1))
    return _reduce(gini, reduction)


def complexity(mask: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """COMP: entropy (nats) of ``|mask| / Σ|mask|`` per clip, ``(batch, ...)`` → ``(batch,)``;
    ``log n`` = uniform (Quantus ``Complexity``, Bhatt et al. 2020)."""
    a = mask.detach().flatten(1).abs().double()
    total = a.sum(dim=1, keepdim=True)
    flat = total[:, 0] <= 0
    a = torch.where(flat[:, None], torch.ones_like(a), a)
    p = a / a.sum(dim=1, keepdim=True)
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(dim=1)
    return _reduce(entropy, reduction)


# --------------------------------------------------------------------------- re-running


def model_probabilities(explainer, inputs: torch.Tensor) -> torch.Tensor:
    """The model's probabilities ``(batch, n_classes)`` float32 (its softmax or sigmoid) on
    its ``inputs``, in the explainer's memory format and precision (``model_input``,
    ``autocast``)."""
    with torch.no_grad(), explainer.autocast():
        logits = explainer.model(explainer.model_input(inputs))
    return explainer.model.probabilities(logits)


def check_apply_to(explainer, apply_to: str) -> None:
    """Raise ``ValueError`` unless ``apply_to`` is one of :data:`APPLY_TO` and the
    explainer's model can take it: ``"features"`` needs a model that takes features (not the
    waveform) from a front end that :meth:`~listenable.frontends.FrontEnd.shares_stft` with
    the listening STFT, so that the masked spectrum *is* the classifier's input spectrum."""
    if apply_to not in APPLY_TO:
        raise ValueError(f"apply_to must be one of {APPLY_TO}, got {apply_to!r}")
    if apply_to == "audio":
        return
    model = explainer.model
    if getattr(model, "input", "features") != "features" or not model.front_end.shares_stft(
        explainer.listening
    ):
        raise ValueError(
            f"apply_to='features' masks the classifier's input spectrum, but {model.name!r} "
            "computes its features from a spectrum other than the listening STFT (or takes "
            "the waveform); use apply_to='audio'"
        )


@torch.no_grad()
def pipeline_probabilities(
    explainer,
    spectra: torch.Tensor,
    length: int,
    *,
    batch_size: int = 8,
    apply_to: str = "audio",
) -> torch.Tensor:
    """Probabilities ``(n, n_classes)`` float32 of the model on the clips whose listening STFT
    is ``spectra (n, channels, bins, frames)``, ``length`` samples each.

    ``apply_to="audio"``: invert the spectra and run the whole pipeline again (front end →
    model). ``"features"``: the front end's features straight from the spectra (no inverse
    STFT; see :func:`check_apply_to`). ``explainer`` is a
    :class:`listenable.explain.Explainer` (its ``listening`` STFT, ``model``, ``front_end``,
    ``model_input`` and ``autocast`` are used); the forward runs in chunks of ``batch_size``.
    """
    if apply_to not in APPLY_TO:
        raise ValueError(f"apply_to must be one of {APPLY_TO}, got {apply_to!r}")
    out = []
    for chunk in spectra.split(max(1, int(batch_size))):
        if apply_to == "features":
            inputs = explainer.front_end.from_stft(chunk)
        else:
            inputs = explainer.model.inputs(explainer.listening.istft(chunk, length))
        out.append(model_probabilities(explainer, inputs))
    return torch.cat(out)


def masked_probabilities(
    explainer,
    spectrum: torch.Tensor,
    mask: torch.Tensor,
    length: int,
    *,
    batch_size: int = 8,
    apply_to: str = "audio",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(p(M⊙x), p((1−M)⊙x))``, each ``(batch, n_classes)``, from one batched re-run.

    Args:
        explainer: the :class:`~listenable.explain.Explainer` (front end + model).
        spectrum: complex STFT of the clips ``(batch, channels, bins, frames)``.
        mask: ``(batch, bins, frames)`` in [0, 1], shared by the channels.
        length: samples of the clips (for the inverse STFT).
        apply_to: ``"audio"`` or ``"features"`` (:func:`pipeline_probabilities`).
    """
    variants = torch.cat([apply_mask(spectrum, mask), apply_mask(spectrum, 1 - mask)])
    probs = pipeline_probabilities(
        explainer, variants, length, batch_size=batch_size, apply_to=apply_to
    )
    batch = spectrum.shape[0]
    return probs[:batch], probs[batch:]


def shuffle_bins(
    maps: torch.Tensor | Sequence[torch.Tensor], generator: torch.Generator | None = None
):
    """The values of each clip's map permuted at random over its TF bins: the floor a
    metric is read against (same values, hence the same area and the same Gini index, but
    no location). ``maps`` is one ``(batch, bins, frames)`` tensor or several of that shape,
    which then get the *same* permutation per clip (a mask and its attribution stay paired).
    The permutations are drawn on the CPU from ``generator`` (one per clip)."""
    single = isinstance(maps, torch.Tensor)
    maps = [maps] if single else list(maps)
    shape = maps[0].shape
    if any(m.shape != shape for m in maps):
        raise ValueError(f"maps of different shapes {[tuple(m.shape) for m in maps]}")
    batch = shape[0]
    n = maps[0][0].numel() if batch else 0
    perm = torch.rand(batch, n, generator=generator).argsort(dim=1).to(maps[0].device)
    out = [m.reshape(batch, n).gather(1, perm).reshape(shape) for m in maps]
    return out[0] if single else out


# --------------------------------------------------------------------------- deletion/insertion


@dataclass
class DeletionInsertion:
    """RISE curves of ``p_c`` against the fraction of TF bins removed / inserted.

    Attributes:
        fractions: ``(steps + 1,)`` from 0 to 1.
        deletion, insertion: ``(batch, steps + 1)``.
        deletion_auc, insertion_auc: ``(batch,)`` trapezoidal areas over the fraction
            (deletion ↓, insertion ↑ are better).
    """

    fractions: torch.Tensor
    deletion: torch.Tensor
    insertion: torch.Tensor
    deletion_auc: torch.Tensor
    insertion_auc: torch.Tensor


def baseline_spectrum(spectrum: torch.Tensor, baseline: str = "zero") -> torch.Tensor:
    """What removed bins become. ``"zero"``: silence. ``"blur"``: each bin's magnitude
    averaged over time (the clip's long-term spectrum, RISE's blurred image for audio),
    with the original phase."""
    if baseline == "zero":
        return torch.zeros_like(spectrum)
    if baseline == "blur":
        magnitude = spectrum.abs().mean(dim=-1, keepdim=True)
        return torch.polar(magnitude.expand_as(spectrum.real).contiguous(), spectrum.angle())
    raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")


def attribution_ranks(attribution: torch.Tensor, generator: torch.Generator | None = None):
    """Rank ``(batch, bins, frames)`` of each bin in descending attribution (0 = most
    important). Ties (e.g. the zeros after ReLU) are broken by a random permutation, so that
    flat regions are removed in random order, not frequency-major memory order."""
    flat = attribution.detach().flatten(1)
    batch, n = flat.shape
    perm = torch.randperm(n, generator=generator).to(flat.device)
    order = perm[torch.argsort(flat[:, perm], dim=1, descending=True, stable=True)]
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(n, device=flat.device).expand(batch, n).contiguous())
    return ranks.view(attribution.shape)


def deletion_insertion(
    explainer,
    spectrum: torch.Tensor,
    attribution: torch.Tensor,
    target: torch.Tensor,
    length: int,
    *,
    steps: int = 16,
    baseline: str = "zero",
    p_full: torch.Tensor | None = None,
    p_empty: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 8,
    apply_to: str = "audio",
) -> DeletionInsertion:
    """RISE deletion and insertion over the TF bins of the STFT.

    The bins are ordered by ``attribution`` (descending; ties in random order). At step
    ``k = 0..steps`` the top ``round(k/steps · n_bins)`` bins are removed from the full STFT
    (deletion) or inserted into the baseline (insertion); a removed bin takes the value of
    :func:`baseline_spectrum` (``"zero"``: silence, the default; ``"blur"``: the clip's
    time-averaged magnitude with its phase). Each variant is inverted and run through the
    whole pipeline; the curve is ``p_c`` against the fraction, the score the trapezoidal
    area under it. The two method-independent end points, ``p_c(x)`` (deletion at 0,
    insertion at 1) and ``p_c(baseline)`` (deletion at 1, insertion at 0), can be passed
    in (``p_full``, ``p_empty``, ``(batch,)``) to save forwards; the ``2 (steps − 1)``
    inner points of every clip are one batched re-run (chunks of ``batch_size``).

    A random ``attribution`` (``torch.rand``) gives the reference a method must beat.
    ``apply_to="features"`` feeds the variants to the front end without the inverse STFT
    (:func:`pipeline_probabilities`).

    Args:
        spectrum: complex ``(batch, channels, bins, frames)``.
        attribution: ``(batch, bins, frames)``, e.g. the normalised heatmap on the STFT grid.
        target: ``(batch,)`` class indices.
        length: samples of the clips.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    batch, channels, bins, frames = spectrum.shape
    if attribution.shape != (batch, bins, frames):
        raise ValueError(
            f"attribution {tuple(attribution.shape)} does not match the spectrum's grid "
            f"{(batch, bins, frames)}"
        )
    target = torch.as_tensor(target, dtype=torch.long, device=spectrum.device).reshape(batch)
    base = baseline_spectrum(spectrum, baseline)
    ends = []
    if p_full is None or p_empty is None:
        ends = pipeline_probabilities(
            explainer,
            torch.cat([spectrum, base]),
            length,
            batch_size=batch_size,
            apply_to=apply_to,
        )
        ends = ends.gather(1, target.repeat(2)[:, None])[:, 0]
    p_full = ends[:batch] if p_full is None else torch.as_tensor(p_full).to(spectrum.device)
    p_empty = ends[batch:] if p_empty is None else torch.as_tensor(p_empty).to(spectrum.device)

    n = bins * frames
    counts = [round(k * n / steps) for k in range(1, steps)]
    ranks = attribution_ranks(attribution, generator)
    inner_del = torch.empty(batch, steps - 1, device=spectrum.device)
    inner_ins = torch.empty_like(inner_del)
    if counts:
        # (curve, count): curve 0 = deletion (top bins take the baseline), 1 = insertion
        plan = [(0, c) for c in counts] + [(1, c) for c in counts]
        chunk = max(1, int(batch_size))
        for i in range(batch):
            x, b = spectrum[i], base[i]
            probs = []
            for start in range(0, len(plan), chunk):
                variants = []
                for curve, count in plan[start : start + chunk]:
                    top = (ranks[i] < count)[None]  # (1, bins, frames), over the channels
                    variants.append(
                        torch.where(top, b, x) if curve == 0 else torch.where(top, x, b)
                    )
                probs.append(
                    pipeline_probabilities(
                        explainer,
                        torch.stack(variants),
                        length,
                        batch_size=chunk,
                        apply_to=apply_to,
                    )
                )
            p_c = torch.cat(probs)[:, int(target[i])]
            inner_del[i], inner_ins[i] = p_c[: steps - 1], p_c[steps - 1 :]
    col = torch.ones(batch, 1, device=spectrum.device)
    deletion = torch.cat([p_full[:, None] * col, inner_del, p_empty[:, None] * col], dim=1)
    insertion = torch.cat([p_empty[:, None] * col, inner_ins, p_full[:, None] * col], dim=1)
    fractions = torch.linspace(0.0, 1.0, steps + 1, device=spectrum.device)
    return DeletionInsertion(
        fractions=fractions,
        deletion=deletion,
        insertion=insertion,
        deletion_auc=torch.trapezoid(deletion, fractions, dim=1),
        insertion_auc=torch.trapezoid(insertion, fractions, dim=1),
    )
