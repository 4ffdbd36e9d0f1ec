"""The recipes' pure math: group advantages, the PPO-clipped policy loss, the Gaussian KL, the OPD losses, MAR.

docs/method.md sections 3 and 5 (Flow-GRPO, arXiv 2505.05470; Flow-OPD, arXiv 2605.08063, Eqs. 11-15). Tensors in,
tensors out: nothing here touches a device, a file or a model. Shapes are in the comments; ``B`` is the batch,
``D`` the number of latent elements (``C * h * w``).

One KL serves GRPO's reference penalty, the OPD distillation term and MAR. Two SDE transitions from the same state
share the covariance ``sigma_t^2 |dt| I``, so (docs/method.md 3, 5.4) with ``c = 1 + sigma_t^2 (1 - t) / (2 t)``:

    mu_theta - mu_T = c dt (v_theta - v_T)
    KL_exact        = sum_d (mu_theta - mu_T)^2 / (2 sigma_t^2 |dt|) = w(t) ||v_theta - v_T||^2
    w(t)            = (|dt| / 2) (sigma_t (1 - t) / (2 t) + 1 / sigma_t)^2

Normalisers, named (``KLNormaliser``):
- ``exact``: the true KL above (a sum over D elements).
- ``exact_mean``: the same KL divided by D (``w(t)`` times the mean squared gap): the paper's time weighting at a
  scale that does not grow with the resolution. Our OPD default.
- ``flow_grpo``: Flow-GRPO's and Flow-OPD's code, ``mean_d (mu_theta - mu_T)^2 / (2 sigma_t^2)`` (no ``dt``; the
  constant is absorbed into beta). Our GRPO default, for parity with beta = 0.04.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from flowmodels.sampling import per_sample, sigma_t_of

AdvantageStd = Literal["global", "group"]
RewardNorm = Literal["sum", "decoupled"]
KLNormaliser = Literal["exact", "exact_mean", "flow_grpo"]
OPDMode = Literal["direct", "pg", "mixed"]
Reduce = Literal["mean", "sum"]


# -- Flow-GRPO (docs/method.md 3) -------------------------------------------------------------------------------------
def group_advantages(
    rewards: Tensor,
    group_size: int,
    *,
    std: AdvantageStd = "global",
    eps: float = 1e-4,
    clip: float | None = 5.0,
) -> Tensor:
    """``A_i = (r_i - mean_group(r)) / (std + eps)``, clipped to ``[-clip, clip]``. rewards: [M*G] -> [M*G].

    Groups are contiguous runs of ``group_size``. ``std="global"`` is the std of the whole batch (Flow-GRPO's
    ``global_std``, its default), ``"group"`` the std within each group; both are population stds (numpy's).
    A group whose rewards are all equal gets exactly 0, whatever the std.
    """
    if group_size < 2:
        raise ValueError(f"group_size={group_size}: advantages need >= 2 samples per prompt")
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be 1-D with a multiple of group_size={group_size} items, got {tuple(rewards.shape)}"
        )
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf; a scorer failed silently")
    r = rewards.double().view(-1, group_size)  # [M, G]
    centred = r - r.mean(dim=1, keepdim=True)
    tied = (r == r[:, :1]).all(dim=1, keepdim=True)  # [M, 1]: exact zeros, not rounding noise
    centred = torch.where(tied, torch.zeros_like(centred), centred)
    if std == "global":
        scale = r.std(correction=0)
    elif std == "group":
        scale = r.std(dim=1, correction=0, keepdim=True)
    else:
        raise ValueError(f"advantage std must be 'global' or 'group', got {std!r}")
    adv = centred / (scale + eps)
    if clip is not None:
        adv = adv.clamp(-clip, clip)
    return adv.view(-1).to(rewards.dtype if rewards.is_floating_point() else torch.float32)


def decoupled_advantages(
    parts: Tensor,
    weights: Tensor,
    group_size: int,
    *,
    eps: float = 1e-4,
    clip: float | None = 5.0,
) -> Tensor:
    """GDPO's advantages (arXiv 2601.05242) for several rewards: each reward normalised within its group, then the
    weighted sum normalised over the batch. parts, weights: [M*G, K] -> [M*G].

    ``A_k = (r_k - mean_group(r_k)) / (std_group(r_k) + eps)`` (a group tied on a reward gets exactly 0 from it),
    ``S = sum_k w_k A_k``, ``A = S / (std_batch(S) + eps)`` (every group's ``S`` sums to 0, so the batch mean is 0),
    clipped. Unlike ``group_advantages`` of the weighted sum, a reward that varies little (an image-quality score
    beside a 0/1 verdict) keeps its weight's share of the signal, and an affine change of one reward's scale changes
    nothing. A reward a sample's task does not use has weight 0 there (its value may be NaN).
    """
    if group_size < 2:
        raise ValueError(f"group_size={group_size}: advantages need >= 2 samples per prompt")
    if parts.ndim != 2 or parts.shape != weights.shape or parts.shape[0] % group_size:
        raise ValueError(
            f"parts and weights must be [M*G, K] alike with M*G a multiple of group_size={group_size}, "
            f"got {tuple(parts.shape)} and {tuple(weights.shape)}"
        )
    used = weights != 0
    if not torch.isfinite(parts[used]).all():
        raise ValueError("rewards contain NaN or inf; a scorer failed silently")
    w = weights.double()
    if not (w.view(-1, group_size, w.shape[1]) == w[::group_size].unsqueeze(1)).all():
        raise ValueError("a group's samples must share their reward weights (one prompt, one task)")
    # unused entries become 0: a tied group, so exactly 0 advantage (and weight 0 besides)
    r = torch.where(used, parts, torch.zeros_like(parts)).double()
    per_reward = torch.stack(
        [
            group_advantages(r[:, j], group_size, std="group", eps=eps, clip=None)
            for j in range(r.shape[1])
        ],
        dim=1,
    )  # [M*G, K]
    total = (w * per_reward).sum(dim=1)  # [M*G]
    adv = total / (total.std(correction=0) + eps)
    if clip is not None:
        adv = adv.clamp(-clip, clip)
    return adv.to(parts.dtype if parts.is_floating_point() else torch.float32)


class PolicyLoss(NamedTuple):
    """The clipped surrogate and what Flow-GRPO logs beside it."""

    loss: Tensor  # scalar
    ratio: Tensor  # [B]
    clipfrac: Tensor  # scalar: fraction of samples with |ratio - 1| > eps
    approx_kl: Tensor  # scalar: 0.5 mean((logp_new - logp_old)^2)


def ppo_clip_loss(
    logp_new: Tensor, logp_old: Tensor, advantages: Tensor, clip_range: float
) -> PolicyLoss:
    """``mean_b max(-A rho, -A clip(rho, 1 - eps, 1 + eps))`` with ``rho = exp(logp_new - logp_old)``. [B] -> scalar."""
    if not (logp_new.shape == logp_old.shape == advantages.shape):
        raise ValueError(
            f"shape mismatch: logp_new {tuple(logp_new.shape)}, logp_old {tuple(logp_old.shape)}, "
            f"advantages {tuple(advantages.shape)}"
        )
    if clip_range <= 0:
        raise ValueError(f"clip_range must be > 0, got {clip_range}")
    adv = advantages.detach()
    ratio = torch.exp(logp_new - logp_old.detach())
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        clipfrac = ((ratio - 1.0).abs() > clip_range).float().mean()
        approx_kl = 0.5 * ((logp_new - logp_old) ** 2).mean()
    return PolicyLoss(loss, ratio, clipfrac, approx_kl)


def _reduce(sq: Tensor, reduce: Reduce) -> Tensor:
    """[B, ...] -> [B], summing or averaging over every element of a sample."""
    dims = tuple(range(1, sq.ndim))
    if reduce == "sum":
        return sq.sum(dim=dims)
    if reduce == "mean":
        return sq.mean(dim=dims)
    raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")


def gaussian_kl(
    mean: Tensor,
    mean_ref: Tensor,
    sigma_t: float | Tensor,
    dt: float | Tensor,
    normaliser: KLNormaliser = "flow_grpo",
) -> Tensor:
    """KL between two SDE transitions with shared covariance, from their means. [B, C, H, W] -> [B].

    ``sigma_t`` is Flow-GRPO's ``std_dev_t`` (without ``sqrt(|dt|)``), ``dt`` the step (either sign).
    """
    if mean.shape != mean_ref.shape:
        raise ValueError(f"means differ in shape: {tuple(mean.shape)} vs {tuple(mean_ref.shape)}")
    sq = (mean.float() - mean_ref.float()) ** 2
    sig2 = per_sample(sigma_t, sq.shape[0], sq.device) ** 2
    step = per_sample(dt, sq.shape[0], sq.device).abs()
    if normaliser == "exact":
        return _reduce(sq, "sum") / (2 * sig2 * step)
    if normaliser == "exact_mean":
        return _reduce(sq, "mean") / (2 * sig2 * step)
    if normaliser == "flow_grpo":
        return _reduce(sq, "mean") / (2 * sig2)
    raise ValueError(f"KL normaliser must be exact, exact_mean or flow_grpo, got {normaliser!r}")


# -- Flow-OPD (docs/method.md 5) --------------------------------------------------------------------------------------
def opd_weight(
    sigma: float | Tensor,
    sigma_next: float | Tensor,
    noise_level: float,
    sigma_cap: float | Tensor | None = None,
) -> Tensor:
    """``w(t) = (|dt| / 2) (sigma_t (1 - t) / (2 t) + 1 / sigma_t)^2`` with ``t = sigma`` (Flow-OPD Eq. 12)."""
    if noise_level <= 0:
        raise ValueError(
            "w(t) needs a stochastic step (noise_level > 0); the ODE step has no density"
        )
    t = torch.as_tensor(sigma, dtype=torch.float32)
    dt = (t - torch.as_tensor(sigma_next, dtype=torch.float32)).abs()
    sig = sigma_t_of(t, noise_level, sigma_cap)
    return dt / 2 * (sig * (1 - t) / (2 * t) + 1 / sig) ** 2


class VelocityWeight(NamedTuple):
    """How a normalised KL reads in velocity space: ``KL = weight * reduce((v - v_T)^2)``."""

    weight: Tensor  # scalar or [B]
    reduce: Reduce


def velocity_weight(
    sigma: float | Tensor,
    sigma_next: float | Tensor,
    noise_level: float,
    sigma_cap: float | Tensor | None = None,
    normaliser: KLNormaliser = "exact_mean",
) -> VelocityWeight:
    """The weight that turns a squared velocity gap into ``gaussian_kl(..., normaliser)`` of the two transitions."""
    w = opd_weight(sigma, sigma_next, noise_level, sigma_cap)
    if normaliser == "exact":
        return VelocityWeight(w, "sum")
    if normaliser == "exact_mean":
        return VelocityWeight(w, "mean")
    if normaliser == "flow_grpo":
        dt = (torch.as_tensor(sigma, dtype=torch.float32) - torch.as_tensor(sigma_next)).abs()
        return VelocityWeight(w * dt, "mean")
    raise ValueError(f"KL normaliser must be exact, exact_mean or flow_grpo, got {normaliser!r}")


def velocity_gap(v: Tensor, v_target: Tensor, vw: VelocityWeight) -> Tensor:
    """``w(t) ||v - v_target||^2`` per sample (the KL of the two transitions). [B, C, H, W] -> [B]."""
    if v.shape != v_target.shape:
        raise ValueError(f"velocities differ in shape: {tuple(v.shape)} vs {tuple(v_target.shape)}")
    sq = (v.float() - v_target.float()) ** 2
    return per_sample(vw.weight, sq.shape[0], sq.device) * _reduce(sq, vw.reduce)


def dense_reward(v: Tensor, v_target: Tensor, vw: VelocityWeight) -> Tensor:
    """The per-step reward ``r_t = -w(t) ||sg(v) - v_target||^2``, strictly detached. -> [B]."""
    return -velocity_gap(v.detach(), v_target.detach(), vw)


def routing_weights(
    tasks: list[str],
    teachers: list[str],
    teacher_of: dict[str, str],
    soft: dict[str, dict[str, float]] | None = None,
) -> Tensor:
    """Per-sample teacher weights ``alpha_k(c)`` [B, K]: one-hot by task tag, or the task's soft weights.

    ``teacher_of`` maps a task to its teacher (hard routing, the paper's default); ``soft`` maps a task to
    ``{teacher: weight}`` (normalised to sum 1) and takes precedence for the tasks it names.
    """
    index = {name: k for k, name in enumerate(teachers)}
    out = torch.zeros(len(tasks), len(teachers), dtype=torch.float32)
    for b, task in enumerate(tasks):
        if soft and task in soft:
            total = sum(soft[task].values())
            if total <= 0 or any(w < 0 for w in soft[task].values()):
                raise ValueError(f"soft weights for task {task!r} must be >= 0 and not all 0")
            for name, w in soft[task].items():
                if name not in index:
                    raise KeyError(
                        f"soft weights for task {task!r} name teacher {name!r}; teachers: {teachers}"
                    )
                out[b, index[name]] = w / total
        elif task in teacher_of:
            out[b, index[teacher_of[task]]] = 1.0
        else:
            raise KeyError(f"no teacher for task {task!r}; teachers cover {sorted(teacher_of)}")
    return out


def mix_targets(velocities: dict[int, Tensor], weights: Tensor, rows: dict[int, Tensor]) -> Tensor:
    """``v_target = sum_k alpha_k v_k`` where teacher ``k`` was evaluated only on ``rows[k]`` (its routed samples).

    velocities[k]: [len(rows[k]), C, H, W]; weights: [B, K]. One-hot rows come out bitwise equal to the teacher's
    velocity (the product with 1.0 is exact).
    """
    if not velocities:
        raise ValueError("no teacher velocities to mix")
    any_v = next(iter(velocities.values()))
    out = torch.zeros((weights.shape[0], *any_v.shape[1:]), dtype=any_v.dtype, device=any_v.device)
    covered = torch.zeros(weights.shape[0], dtype=torch.bool)
    for k, v in velocities.items():
        idx = rows[k]
        w = weights[idx, k].to(v.device, v.dtype).view(-1, *([1] * (v.ndim - 1)))
        out[idx.to(v.device)] += w * v
        covered[idx] = True
    needed = weights.sum(dim=1) > 0
    if bool((needed & ~covered).any()):
        raise ValueError("some samples have routing weight but no teacher velocity")
    return out


def _clamp(adv: Tensor, clip: float | None) -> Tensor:
    return adv if clip is None else adv.clamp(-clip, clip)


class OPDTerms(NamedTuple):
    """The OPD objective and its parts (all scalars)."""

    loss: Tensor  # distill + mar: what is back-propagated
    distill: Tensor  # the OPD term of the chosen mode
    mar: Tensor  # lambda * E[w ||v_theta - sg(v_anchor)||^2] (0 without an anchor)
    gap: Tensor  # E[w ||sg(v_theta) - v_T||^2]: the detached KL to the routed teacher, for logging
    anchor_gap: Tensor  # E[w ||sg(v_theta) - v_anchor||^2] (0 without an anchor)


def opd_loss(
    mode: OPDMode,
    v: Tensor,
    v_teacher: Tensor,
    vw: VelocityWeight,
    *,
    v_anchor: Tensor | None = None,
    mar_lambda: float = 0.0,
    logp_new: Tensor | None = None,
    logp_old: Tensor | None = None,
    task_advantages: Tensor | None = None,
    clip_range: float = 1e-4,
    adv_clip: float | None = 5.0,
) -> OPDTerms:
    """Flow-OPD on the student's own states (docs/method.md 5.5-5.6). v, v_teacher, v_anchor: [B, C, H, W].

    - ``direct`` (the paper's final form, Eq. 15): ``E[w ||v_theta - sg(v_T)||^2]``; gradients through v only.
    - ``pg``: the detached dense reward ``-w ||sg(v_theta) - v_T||^2`` is the per-step advantage of the
      PPO-clipped surrogate; gradients only through the ratio (needs ``logp_new``/``logp_old``).
    - ``mixed``: GRPO task advantage plus the dense reward, in the same surrogate.
    The ``pg`` and ``mixed`` advantages are clamped to ``+-adv_clip`` as the authors' code does (``mixed``: the task
    advantage, then the sum); ``None`` leaves them unclamped.
    MAR adds ``lambda E[w ||v_theta - sg(v_anchor)||^2]`` whatever the mode.
    """
    gap = velocity_gap(v.detach(), v_teacher.detach(), vw)  # [B]
    if mode == "direct":
        distill = velocity_gap(v, v_teacher.detach(), vw).mean()
    elif mode in ("pg", "mixed"):
        if logp_new is None or logp_old is None:
            raise ValueError(f"OPD mode {mode!r} needs logp_new and logp_old")
        adv = -gap
        if mode == "mixed":
            if task_advantages is None:
                raise ValueError("OPD mode 'mixed' needs task_advantages")
            adv = adv + _clamp(task_advantages.detach().to(adv), adv_clip)
        adv = _clamp(adv, adv_clip)
        distill = ppo_clip_loss(logp_new, logp_old, adv, clip_range).loss
    else:
        raise ValueError(f"OPD mode must be direct, pg or mixed, got {mode!r}")
    zero = distill.new_zeros(())
    if v_anchor is not None and mar_lambda > 0:
        mar = mar_lambda * velocity_gap(v, v_anchor.detach(), vw).mean()
        anchor_gap = velocity_gap(v.detach(), v_anchor.detach(), vw).mean()
    else:
        mar, anchor_gap = zero, zero
    return OPDTerms(distill + mar, distill, mar, gap.mean(), anchor_gap)


# -- cold start (docs/method.md 4) ------------------------------------------------------------------------------------
def flow_matching_loss(v: Tensor, x0: Tensor, noise: Tensor) -> Tensor:
    """SFT's rectified-flow loss: regress ``v_theta(x_s)`` to ``eps - x0``. [B, C, H, W] -> scalar."""
    if not (v.shape == x0.shape == noise.shape):
        raise ValueError(
            f"shape mismatch: v {tuple(v.shape)}, x0 {tuple(x0.shape)}, noise {tuple(noise.shape)}"
        )
    return ((v.float() - (noise.float() - x0.float())) ** 2).mean()


def noisy_latents(x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
    """``x_s = (1 - s) x0 + s eps`` with one ``s`` per sample. sigma: [B] -> [B, C, H, W]."""
    s = sigma.view(-1, *([1] * (x0.ndim - 1))).to(x0)
    return (1 - s) * x0 + s * noise


def train_sigmas(
    batch: int,
    generator: torch.Generator,
    *,
    scheme: Literal["logit_normal", "uniform"],
    shift: float,
) -> Tensor:
    """Noise levels for flow-matching training: SD3's logit-normal (or uniform) ``u``, then the scheduler shift."""
    if scheme == "logit_normal":
        u = torch.sigmoid(torch.randn(batch, generator=generator))
    elif scheme == "uniform":
        u = torch.rand(batch, generator=generator)
    else:
        raise ValueError(f"timestep scheme must be logit_normal or uniform, got {scheme!r}")
    return shift * u / (1 + (shift - 1) * u)
