"""The Flow-GRPO SDE step with its log-probability, and the rollout that records trajectories.

docs/method.md section 2 (Flow-GRPO, Liu et al. 2025, arXiv 2505.05470, eqs. 8-9; Flow-OPD, arXiv 2605.08063, eq. 5).
Diffusers convention: noise level ``s`` in [0, 1], ``s = 1`` is pure noise, ``x_s = (1 - s) x0 + s eps`` and the
model predicts ``v ~ eps - x0``. One step goes from ``s`` to ``s' < s`` (``dt = s' - s < 0``):

    sigma_t = a * sqrt(s / (1 - s~))            s~ = sigma_cap when s == 1, else s
    mu      = x + [v + sigma_t^2 / (2 s) (x + (1 - s) v)] dt
    x'      = mu + sigma_t sqrt(-dt) eps

``a = 0`` is exactly the Euler ODE step ``x + v dt``. Everything is computed in float32 whatever the model's dtype.
``sde_step`` is pure (tensors in, tensors out); ``rollout`` drives a model through it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

import torch
from torch import Tensor

from flowmodels.backend import Conditioning, encode_prompts, repeat_rows

if TYPE_CHECKING:
    from flowmodels.backend import FlowModel

LogProbReduce = Literal["mean", "sum"]
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


class SDEStep(NamedTuple):
    """One transition. ``log_prob`` is None for the deterministic (``noise_level = 0``) step."""

    sample: Tensor  # x'     [B, C, H, W]
    log_prob: Tensor | None  # [B]: mean (Flow-GRPO) or sum (true likelihood) over C*H*W
    mean: Tensor  # mu     [B, C, H, W]
    std: Tensor  # sigma_t * sqrt(-dt), the transition std   [B, 1, 1, 1]
    sigma_t: Tensor  # a * sqrt(s / (1 - s~)), Flow-GRPO's std_dev_t   [B, 1, 1, 1]


def per_sample(
    value: float | Tensor, batch: int, device: torch.device | str | None = None
) -> Tensor:
    """A per-sample quantity (a scalar, [B], or [B, 1, ..., 1]) as a float32 [B] tensor; anything else is an error."""
    t = torch.as_tensor(value, dtype=torch.float32, device=device)
    if t.ndim == 0:
        return t.expand(batch)
    if t.shape[0] != batch or t.numel() != batch:
        raise ValueError(
            f"expected a scalar or one value per sample ({batch}), got shape {tuple(t.shape)}"
        )
    return t.reshape(batch)


def _column(value: float | Tensor, batch: int, ndim: int, device: torch.device) -> Tensor:
    """``per_sample`` shaped [B, 1, ..., 1] to broadcast over a batch of ``ndim``-dimensional tensors."""
    return per_sample(value, batch, device).reshape(batch, *([1] * (ndim - 1)))


def sigma_t_of(
    sigma: Tensor, noise_level: float, sigma_cap: float | Tensor | None = None
) -> Tensor:
    """Flow-GRPO's ``std_dev_t = a sqrt(s / (1 - s~))`` (docs/method.md 2); ``sigma_cap`` replaces ``s`` at ``s = 1``."""
    at_one = sigma >= 1.0
    if bool(at_one.any()):
        if sigma_cap is None:
            raise ValueError(
                "sigma == 1 divides by zero in a*sqrt(s/(1-s)); pass sigma_cap "
                "(Flow-GRPO uses the schedule's second sigma)"
            )
        cap = torch.as_tensor(sigma_cap, dtype=torch.float32, device=sigma.device)
        denom_s = torch.where(at_one, cap.expand_as(sigma), sigma)
    else:
        denom_s = sigma
    return noise_level * torch.sqrt(sigma / (1 - denom_s))


def gaussian_log_prob(
    x: Tensor, mean: Tensor, std: Tensor, reduce: LogProbReduce = "mean"
) -> Tensor:
    """Log-density of ``x`` under ``N(mean, std^2 I)``, reduced over all but the batch dim. [B, ...] -> [B]."""
    elem = -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - _LOG_SQRT_2PI
    dims = tuple(range(1, elem.ndim))
    if reduce == "mean":
        return elem.mean(dim=dims)
    if reduce == "sum":
        return elem.sum(dim=dims)
    raise ValueError(f"logprob reduce must be 'mean' or 'sum', got {reduce!r}")


def sde_step(
    x: Tensor,
    v: Tensor,
    sigma: float | Tensor,
    sigma_next: float | Tensor,
    noise_level: float,
    *,
    sigma_cap: float | Tensor | None = None,
    prev_sample: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    logprob: LogProbReduce = "mean",
) -> SDEStep:
    """One SDE step from ``sigma`` to ``sigma_next`` (docs/method.md 2).

    x, v: [B, C, H, W]; sigma, sigma_next: scalars or [B]. ``prev_sample`` (the recorded next state) is scored
    instead of drawing a new one, which is how log-probs are recomputed in training. ``noise`` or ``generator``
    (one per image for per-image seeds) fix the draw.
    """
    if noise_level < 0:
        raise ValueError(f"noise_level must be >= 0, got {noise_level}")
    x32, v32 = x.float(), v.float()
    batch = x32.shape[0]
    s = _column(sigma, batch, x32.ndim, x32.device)
    s_next = _column(sigma_next, batch, x32.ndim, x32.device)
    dt = s_next - s
    if bool((dt >= 0).any()):
        raise ValueError("sigma_next must be smaller than sigma (the sampler moves toward data)")

    if noise_level == 0:
        mean = x32 + v32 * dt
        zero = torch.zeros_like(s)
        sample = mean if prev_sample is None else prev_sample.float()
        return SDEStep(sample, None, mean, zero, zero)

    sig_t = sigma_t_of(s, noise_level, sigma_cap)
    # Flow-GRPO's arrangement of the mean (bitwise parity with its sd3_sde_with_logprob.py).
    mean = x32 * (1 + sig_t**2 / (2 * s) * dt) + v32 * (1 + sig_t**2 * (1 - s) / (2 * s)) * dt
    std = sig_t * torch.sqrt(-dt)
    if prev_sample is None:
        if noise is None:
            noise = _draw(x32.shape, generator, x32.device)
        sample = mean + std * noise.float()
    else:
        sample = prev_sample.float()
    log_prob = gaussian_log_prob(sample.detach(), mean, std, logprob)
    return SDEStep(sample, log_prob, mean, std, sig_t)


def _draw(
    shape: torch.Size,
    generator: torch.Generator | list[torch.Generator] | None,
    device: torch.device,
) -> Tensor:
    """Standard normal noise, one generator per image when a list is given (drawn on CPU for portability)."""
    if isinstance(generator, list):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        noise = torch.stack([torch.randn(shape[1:], generator=g) for g in generator])
    else:
        noise = torch.randn(shape, generator=generator)
    return noise.to(device)


@dataclass
class Rollout:
    """What a rollout records, per image: the trajectory, its log-probs and the schedule."""

    latents: Tensor  # [B, N+1, C, h, w]: x at s_0 .. s_N (x_{i+1} is the sample of step i)
    log_probs: Tensor  # [B, N] (zeros when noise_level = 0)
    sigmas: Tensor  # [N+1] from the scheduler, s_0 = 1 ... s_N = 0
    images: Tensor | None  # [B, 3, H, W] in [0, 1], float32, or None when not decoded
    cond: Conditioning  # prompt conditioning, [B, ...]
    uncond: Conditioning | None  # negative-prompt conditioning, [B, ...] (None without CFG)
    seeds: list[int]
    noise_level: float
    cfg: float
    sde_window: tuple[int, int] | None = (
        None  # steps [start, stop) were the SDE, the rest the ODE; None = all SDE
    )

    def stochastic(self, index: int) -> bool:
        """Whether step ``index`` drew noise (and so has a density to train on)."""
        return self.noise_level != 0 and _in_window(self.sde_window, index)

    def select(self, rows: Tensor) -> Rollout:
        """The rollout of the images ``rows`` (a 1-D index tensor), in that order."""
        idx = rows.tolist()
        return dataclasses.replace(
            self,
            latents=self.latents[rows],
            log_probs=self.log_probs[rows],
            images=None if self.images is None else self.images[rows],
            cond=self.cond.select(rows),
            uncond=None if self.uncond is None else self.uncond.select(rows),
            seeds=[self.seeds[i] for i in idx],
        )

    @staticmethod
    def cat(parts: list[Rollout]) -> Rollout:
        """Rollouts of one schedule (one epoch's batches) as one, in order."""
        first = parts[0]
        for p in parts[1:]:
            same = (p.noise_level, p.cfg, p.sde_window) == (
                first.noise_level,
                first.cfg,
                first.sde_window,
            )
            if not same or not torch.equal(p.sigmas, first.sigmas):
                raise ValueError(
                    "only rollouts of the same schedule, noise level, CFG and SDE window join"
                )
        with_images = all(p.images is not None for p in parts)
        return dataclasses.replace(
            first,
            latents=torch.cat([p.latents for p in parts]),
            log_probs=torch.cat([p.log_probs for p in parts]),
            images=torch.cat([p.images for p in parts]) if with_images else None,  # type: ignore[misc]
            cond=Conditioning.cat([p.cond for p in parts]),
            uncond=None if first.uncond is None else Conditioning.cat([p.uncond for p in parts]),  # type: ignore[misc]
            seeds=[s for p in parts for s in p.seeds],
        )


def _in_window(window: tuple[int, int] | None, index: int) -> bool:
    """Whether step ``index`` is an SDE step of ``window`` (None: every step is)."""
    return window is None or window[0] <= index < window[1]


def initial_noise(shape: tuple[int, ...], seeds: list[int]) -> tuple[Tensor, list[torch.Generator]]:
    """Per-image starting noise [B, *shape] and the per-image generators that continue the stream."""
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    return torch.stack([torch.randn(shape, generator=g) for g in gens]), gens


@torch.no_grad()
def rollout(
    model: FlowModel,
    prompts: list[str],
    seeds: list[int],
    *,
    steps: int = 10,
    cfg: float = 4.5,
    noise_level: float = 0.7,
    height: int = 512,
    width: int = 512,
    negative_prompt: str = "",
    logprob: LogProbReduce = "mean",
    decode: bool = True,
    cond: Conditioning | None = None,
    progress: bool = False,
    sde_window: tuple[int, int] | None = None,
    stop: int | None = None,
) -> Rollout:
    """Sample ``len(prompts)`` images with the SDE (or the ODE when ``noise_level = 0``), recording everything.

    Image ``b`` starts from noise seeded by ``seeds[b]`` and draws its step noise from the same generator, so an
    image depends only on its own seed, not on the batch it was made in. ``sde_window = (start, stop)`` takes SDE
    steps only there and ODE steps elsewhere (Flow-GRPO-Fast); the ODE steps' log-probs are recorded as 0.
    Each distinct prompt is encoded once (``encode_prompts``) and the negative prompt once per model.
    ``stop = n`` takes only the first ``n`` steps and decodes nothing: the states ``x_0 .. x_n`` (the same bits as
    in the full rollout) for a trainer that reads no final image.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if sde_window is not None:
        lo, hi = sde_window
        if not 0 <= lo < hi <= steps:
            raise ValueError(f"sde_window {sde_window} must lie in [0, {steps}] and hold a step")
        sde_window = (int(lo), int(hi))
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    if stop is not None and not 0 <= stop <= steps:
        raise ValueError(f"stop={stop} must lie in [0, {steps}]")
    shape = model.latent_shape(height, width)
    sigmas = model.sigmas(steps, height=height, width=width).float().cpu()
    if cond is None:
        cond = encode_prompts(model, prompts)
    uncond = (
        repeat_rows(model.encode_negative(negative_prompt), len(prompts)) if cfg != 1.0 else None
    )
    x, gens = initial_noise(shape, seeds)
    x = x.to(model.device)
    traj, logps = [x.float()], []
    sigma_cap = float(sigmas[1]) if steps > 1 else None
    it = range(steps if stop is None else stop)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="sampling", leave=False)
    for i in it:
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        v = model.velocity(x, s, cond, uncond, cfg)
        step = sde_step(
            x,
            v,
            s,
            s_next,
            noise_level if _in_window(sde_window, i) else 0.0,
            sigma_cap=sigma_cap,
            generator=gens,
            logprob=logprob,
        )
        x = step.sample
        traj.append(x)
        logps.append(step.log_prob if step.log_prob is not None else torch.zeros(len(prompts)))
    latents = torch.stack(traj, dim=1)
    images = model.decode(x) if decode and stop is None else None
    return Rollout(
        latents=latents,
        log_probs=torch.stack([lp.to(latents.device) for lp in logps], dim=1)
        if logps
        else torch.zeros(len(prompts), 0, device=latents.device),
        sigmas=sigmas,
        images=images,
        cond=cond,
        uncond=uncond,
        seeds=list(seeds),
        noise_level=noise_level,
        cfg=cfg,
        sde_window=sde_window,
    )


def velocity_at(
    model: FlowModel, ro: Rollout, index: int, *, batch: slice | Tensor | None = None
) -> Tensor:
    """The model's current (CFG) velocity at the recorded state ``index``: [b, C, h, w] (with grad if enabled)."""
    sel = slice(None) if batch is None else batch
    cond = ro.cond.select(sel)
    uncond = ro.uncond.select(sel) if ro.uncond is not None else None
    return model.velocity(ro.latents[sel, index], float(ro.sigmas[index]), cond, uncond, ro.cfg)


def recompute_step(
    model: FlowModel,
    ro: Rollout,
    index: int,
    *,
    batch: slice | Tensor | None = None,
    logprob: LogProbReduce = "mean",
    v: Tensor | None = None,
) -> SDEStep:
    """Re-score the recorded transition ``index`` with the model's current weights (the GRPO/OPD inner loop).

    ``v`` reuses a velocity already computed by ``velocity_at`` for the same rows (OPD needs both).
    """
    if not ro.stochastic(index):
        raise ValueError(
            f"step {index} of this rollout was the deterministic ODE step (noise level {ro.noise_level}, "
            f"SDE window {ro.sde_window}): it has no log-prob; train only the SDE steps"
        )
    sel = slice(None) if batch is None else batch
    x = ro.latents[sel, index]
    nxt = ro.latents[sel, index + 1]
    s, s_next = float(ro.sigmas[index]), float(ro.sigmas[index + 1])
    if v is None:
        v = velocity_at(model, ro, index, batch=batch)
    sigma_cap = float(ro.sigmas[1]) if len(ro.sigmas) > 2 else None
    return sde_step(
        x, v, s, s_next, ro.noise_level, sigma_cap=sigma_cap, prev_sample=nxt, logprob=logprob
    )
