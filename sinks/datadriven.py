"""Data-driven attribution over whole journeys: Markov removal effect and simplified Shapley values. Pure, no I/O.

A journey is a visitor's or lead's channels in time order and whether it reached the stage (with its revenue).
Consecutive repeats of a channel collapse (``A, A, B`` is ``A, B``) before either model looks at it: a repeat
is the same channel again, not a step between channels (Anderl et al., 2016). Journeys without a touch carry no
channel to credit and are left out.

**Markov removal effect, order k** (docs/ATTRIBUTION.md, "Data-driven models"). The states are ``start``, the
observed channel tuples, ``conversion`` and ``null``. The state after the i-th touch is the tuple of the last
(up to) k channels, so an order-1 state is one channel and the first states of a path are shorter prefixes. Every
journey adds ``start -> s1 -> ... -> sn -> conversion|null``; transition probabilities are the counts divided by
the counts out of each state. P(conversion) is the absorption probability into ``conversion`` from ``start``:
with Q the transitions between transient states and r the transitions into conversion, x = (I - Q)^-1 r, solved
(not inverted, not simulated). Removing channel c removes every state whose tuple holds c, so the transitions
into them go to ``null``: the same system restricted to the other states. Removal effect
RE(c) = 1 - P_without_c / P; share(c) = RE(c) / sum of RE; credited conversions and revenue = share x totals.

**Simplified Shapley value** (Zhao et al., 2018, on Shao and Li, 2011 and Dalessandro et al., 2012). R(S) is the
conversions (or revenue) of the journeys whose channel set is exactly S. With the coalition value
v(S) = sum of R(T) over the observed T that are subsets of S, the exact Shapley value of channel c reduces to
phi(c) = sum over observed S holding c of R(S) / |S|, so only the observed channel sets are summed: it scales to
many channels. Shares are phi / total.

Both models get a bootstrap interval: the journeys are resampled with replacement (the same number), the model
is run on each resample, and the 2.5 and 97.5 percentiles of each channel's credited conversions are the 95%
interval. Resampling is done on the distinct (path, converted) groups with multinomial counts, which is the same
distribution as drawing journeys one by one and much cheaper.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Journey:
    """One visitor's or lead's channels in time order, whether it reached the stage, and the revenue it brought."""

    channels: tuple[str, ...]
    converted: bool
    revenue: float = 0.0


@dataclass(frozen=True)
class ChannelCredit:
    """A channel's credit under a data-driven model, with its 95% bootstrap interval on credited conversions.

    ``removal_effect`` is the Markov removal effect (0 for Shapley); ``ci_low``/``ci_high`` equal ``conversions``
    when no bootstrap was run.
    """

    channel: str
    share: float
    conversions: float
    revenue: float
    removal_effect: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Attribution:
    """The result of one model over a set of journeys."""

    model: str
    order: int
    journeys: int  # journeys with at least one touch, converting or not
    conversions: int
    revenue: float
    conversion_probability: float  # Markov P(conversion) from start; the observed rate for Shapley
    credits: tuple[ChannelCredit, ...]  # by channel name


def collapse(channels: Iterable[str]) -> tuple[str, ...]:
    """The channels with consecutive repeats collapsed: ``A, A, B, A`` -> ``A, B, A``."""
    out: list[str] = []
    for channel in channels:
        if not out or out[-1] != channel:
            out.append(channel)
    return tuple(out)


@dataclass(frozen=True)
class _Groups:
    """Distinct collapsed (path, converted) groups with their journey counts and revenue sums."""

    paths: tuple[tuple[str, ...], ...]
    converted: npt.NDArray[np.bool_]
    counts: FloatArray
    revenue: FloatArray


def _group(journeys: Iterable[Journey]) -> _Groups:
    index: dict[tuple[tuple[str, ...], bool], int] = {}
    counts: list[float] = []
    revenue: list[float] = []
    for journey in journeys:
        path = collapse(journey.channels)
        if not path:
            continue
        key = (path, journey.converted)
        at = index.setdefault(key, len(index))
        if at == len(counts):
            counts.append(0.0)
            revenue.append(0.0)
        counts[at] += 1.0
        revenue[at] += journey.revenue if journey.converted else 0.0
    keys = list(index)
    return _Groups(
        paths=tuple(path for path, _ in keys),
        converted=np.array([converted for _, converted in keys], dtype=np.bool_),
        counts=np.array(counts, dtype=np.float64),
        revenue=np.array(revenue, dtype=np.float64),
    )


# -- Markov ----------------------------------------------------------------------------------------------------

_START, _CONVERSION, _NULL = 0, -1, -2


@dataclass(frozen=True)
class _Chain:
    """The transitions of every group as index arrays, so a resample's counts are one weighted bincount."""

    states: tuple[tuple[str, ...], ...]  # index 0 is start (the empty tuple)
    group_of: npt.NDArray[np.int64]  # per transition: its group
    source: npt.NDArray[np.int64]  # per transition: from-state
    target: npt.NDArray[np.int64]  # per transition: to-state, or _CONVERSION / _NULL


def _chain(groups: _Groups, order: int) -> _Chain:
    states: dict[tuple[str, ...], int] = {(): _START}
    group_of: list[int] = []
    source: list[int] = []
    target: list[int] = []
    for g, path in enumerate(groups.paths):
        previous = _START
        for i in range(len(path)):
            state = states.setdefault(path[max(0, i - order + 1) : i + 1], len(states))
            group_of.append(g)
            source.append(previous)
            target.append(state)
            previous = state
        group_of.append(g)
        source.append(previous)
        target.append(_CONVERSION if groups.converted[g] else _NULL)
    return _Chain(
        states=tuple(states),
        group_of=np.array(group_of, dtype=np.int64),
        source=np.array(source, dtype=np.int64),
        target=np.array(target, dtype=np.int64),
    )


def _absorption(q: FloatArray, r: FloatArray, keep: npt.NDArray[np.bool_]) -> float:
    """P(conversion) from start over the kept transient states (start is index 0 and always kept)."""
    idx = np.flatnonzero(keep)
    sub = q[np.ix_(idx, idx)]
    x = np.linalg.solve(np.eye(len(idx)) - sub, r[idx])
    return float(x[0])


def _removal_effects(
    chain: _Chain, weights: FloatArray, channels: Sequence[str], contains: npt.NDArray[np.bool_]
) -> tuple[float, FloatArray]:
    """P(conversion) and each channel's removal effect for groups weighted by ``weights`` (journey counts);
    ``contains[j, s]`` tells whether state s holds channel j."""
    n = len(chain.states)
    w = weights[chain.group_of]
    internal = chain.target >= 0
    flat = chain.source[internal] * n + chain.target[internal]
    counts = np.bincount(flat, w[internal], n * n).reshape(n, n)
    to_conversion = np.bincount(chain.source[chain.target == _CONVERSION], w[chain.target == _CONVERSION], n)
    out_total = np.bincount(chain.source, w, n)
    present = out_total > 0
    denominator = np.where(present, out_total, 1.0)
    q = counts / denominator[:, None]
    r = to_conversion / denominator
    effects = np.zeros(len(channels), dtype=np.float64)
    if not present[_START] or r.sum() == 0:
        return 0.0, effects
    # A state no resampled journey reached has no way out; it cannot be reached either, so it is left out.
    base = _absorption(q, r, present)
    for j in range(len(channels)):
        keep = present & ~contains[j]
        keep[_START] = True
        effects[j] = 1.0 - _absorption(q, r, keep) / base
    return base, effects


def _shares(values: FloatArray) -> FloatArray:
    total = values.sum()
    return values / total if total > 0 else np.zeros_like(values)


# -- Shapley ---------------------------------------------------------------------------------------------------


def _shapley_matrix(groups: _Groups, channels: Sequence[str]) -> FloatArray:
    """Per group, per channel: 1/|S| when the channel is in the group's channel set S, else 0."""
    column = {channel: j for j, channel in enumerate(channels)}
    matrix = np.zeros((len(groups.paths), len(channels)), dtype=np.float64)
    for g, path in enumerate(groups.paths):
        members = set(path)
        for channel in members:
            matrix[g, column[channel]] = 1.0 / len(members)
    return matrix


# -- the models --------------------------------------------------------------------------------------------------


def _percentiles(samples: FloatArray, point: FloatArray) -> tuple[FloatArray, FloatArray]:
    if samples.shape[0] == 0:
        return point, point
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)


def attribute(
    journeys: Iterable[Journey], model: str, *, order: int = 1, bootstrap: int = 0, seed: int = 0
) -> Attribution:
    """Credit conversions and revenue to channels under ``model`` (``markov`` or ``shapley``).

    ``order`` (1 to 3) is the Markov chain's order (Shapley ignores it: it is 0 in the result); ``bootstrap``
    resamples give each channel's 95% interval on credited conversions, reproducibly for a ``seed``.
    """
    if model not in ("markov", "shapley"):
        raise ValueError(f"unknown data-driven model {model!r}; choose markov or shapley")
    if model == "markov" and order not in (1, 2, 3):
        raise ValueError(f"Markov order must be 1, 2 or 3, not {order}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap resamples must be 0 or more, not {bootstrap}")
    groups = _group(journeys)
    channels = sorted({channel for path in groups.paths for channel in path})
    conv_weight = np.where(groups.converted, 1.0, 0.0)

    def run(weights: FloatArray, revenue: FloatArray) -> tuple[float, FloatArray, FloatArray, FloatArray]:
        """(probability, removal effects, shares, credited conversions) for the groups weighted by ``weights``."""
        conversions = float((weights * conv_weight).sum())
        if model == "markov":
            probability, effects = _removal_effects(chain, weights, channels, contains)
            shares = _shares(effects)
            return probability, effects, shares, shares * conversions
        credited = (weights * conv_weight) @ shapley
        return 0.0, np.zeros(len(channels)), _shares(credited), credited

    if model == "markov":
        chain = _chain(groups, order)
        contains = np.array([[channel in state for state in chain.states] for channel in channels], dtype=np.bool_)
    else:
        shapley = _shapley_matrix(groups, channels)
    probability, effects, shares, credited = run(groups.counts, groups.revenue)
    total_journeys = float(groups.counts.sum())
    total_conversions = float((groups.counts * conv_weight).sum())
    total_revenue = float(groups.revenue.sum())
    if model == "markov":
        revenue = shares * total_revenue
    else:
        revenue = groups.revenue @ shapley
        probability = total_conversions / total_journeys if total_journeys else 0.0

    rng = np.random.default_rng(seed)
    samples = np.zeros((bootstrap if groups.paths else 0, len(channels)), dtype=np.float64)
    for b in range(samples.shape[0]):
        weights = rng.multinomial(int(total_journeys), groups.counts / total_journeys).astype(np.float64)
        samples[b] = run(weights, groups.revenue)[3]
    low, high = _percentiles(samples, credited)
    return Attribution(
        model=model,
        order=order if model == "markov" else 0,
        journeys=int(total_journeys),
        conversions=int(total_conversions),
        revenue=total_revenue,
        conversion_probability=probability,
        credits=tuple(
            ChannelCredit(
                channel=channel,
                share=float(shares[j]),
                conversions=float(credited[j]),
                revenue=float(revenue[j]),
                removal_effect=float(effects[j]),
                ci_low=float(low[j]),
                ci_high=float(high[j]),
            )
            for j, channel in enumerate(channels)
        ),
    )
