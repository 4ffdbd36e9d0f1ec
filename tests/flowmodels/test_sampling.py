"""The SDE step (docs/method.md 2): Euler limit, independent Gaussian log-density, golden schedule values."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowmodels.sampling import gaussian_log_prob, sde_step, sigma_t_of

# SD3.5-M schedule (shift 3, 10 steps) and Flow-GRPO's std_dev_t at a = 0.7, from flow-grpo-family.md 1.2
REF_SIGMAS = [1.000, 0.960, 0.913, 0.858, 0.790, 0.707, 0.602, 0.465, 0.278, 0.0089]
REF_STD_DEV_T = [3.51, 3.44, 2.27, 1.72, 1.36, 1.09, 0.861, 0.652, 0.434, 0.066]
REF_STEP_STD = [0.700, 0.743, 0.536, 0.446, 0.392, 0.353, 0.319, 0.282, 0.225, 0.006]


def _xv(seed: int = 0, shape: tuple[int, ...] = (3, 4, 8, 8)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def test_noise_level_zero_is_exactly_the_euler_step() -> None:
    x, v = _xv()
    s, s_next = torch.tensor(0.7073), torch.tensor(0.6022)  # float32, as the step computes
    step = sde_step(x, v, s, s_next, 0.0)
    assert torch.equal(step.sample, x + v * (s_next - s))
    assert step.log_prob is None


def test_mean_matches_the_sde_discretisation_written_independently() -> None:
    x, v = _xv(1)
    s, s_next, a = 0.858, 0.790, 0.7
    step = sde_step(x, v, s, s_next, a)
    sig = a * math.sqrt(s / (1 - s))
    dt = s_next - s
    mu = x + (v + sig**2 / (2 * s) * (x + (1 - s) * v)) * dt  # docs/method.md 2, as written there
    torch.testing.assert_close(step.mean, mu, rtol=1e-6, atol=1e-6)
    assert step.std.flatten()[0].item() == pytest.approx(sig * math.sqrt(-dt), rel=1e-6)


@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_log_prob_equals_an_independent_gaussian_density(reduce: str) -> None:
    x, v = _xv(2)
    step = sde_step(
        x, v, 0.602, 0.465, 0.7, generator=torch.Generator().manual_seed(3), logprob=reduce
    )
    normal = torch.distributions.Normal(step.mean, step.std.expand_as(step.mean))
    elem = normal.log_prob(step.sample)
    want = elem.flatten(1).mean(1) if reduce == "mean" else elem.flatten(1).sum(1)
    torch.testing.assert_close(step.log_prob, want, rtol=1e-5, atol=1e-4)


def test_sum_is_mean_times_number_of_elements() -> None:
    x, v = _xv(4)
    noise = torch.randn_like(x)
    m = sde_step(x, v, 0.465, 0.278, 0.7, noise=noise, logprob="mean").log_prob
    s = sde_step(x, v, 0.465, 0.278, 0.7, noise=noise, logprob="sum").log_prob
    assert m is not None and s is not None
    torch.testing.assert_close(s, m * x[0].numel(), rtol=1e-5, atol=1e-3)


def test_rescoring_the_drawn_sample_gives_the_same_log_prob() -> None:
    x, v = _xv(5)
    drawn = sde_step(x, v, 0.79, 0.707, 0.7, generator=torch.Generator().manual_seed(0))
    again = sde_step(x, v, 0.79, 0.707, 0.7, prev_sample=drawn.sample)
    assert torch.equal(drawn.log_prob, again.log_prob)


def test_first_step_needs_sigma_cap_and_uses_it() -> None:
    x, v = _xv(6)
    with pytest.raises(ValueError, match="sigma_cap"):
        sde_step(x, v, 1.0, 0.96, 0.7)
    step = sde_step(x, v, 1.0, 0.96, 0.7, sigma_cap=0.96)
    assert step.sigma_t.flatten()[0].item() == pytest.approx(
        0.7 * math.sqrt(1 / (1 - 0.96)), rel=1e-6
    )


def test_per_sample_noise_levels_match_scalar_calls() -> None:
    x, v = _xv(7)
    s = torch.tensor([0.9133, 0.602, 0.278])
    s_next = torch.tensor([0.8577, 0.4649, 0.0089])
    noise = torch.randn_like(x)
    batched = sde_step(x, v, s, s_next, 0.7, noise=noise)
    for b in range(3):
        one = sde_step(
            x[b : b + 1], v[b : b + 1], float(s[b]), float(s_next[b]), 0.7, noise=noise[b : b + 1]
        )
        torch.testing.assert_close(batched.sample[b : b + 1], one.sample)
        torch.testing.assert_close(batched.log_prob[b : b + 1], one.log_prob)


def test_bad_direction_and_negative_noise_level_are_rejected() -> None:
    x, v = _xv(8)
    with pytest.raises(ValueError, match="smaller"):
        sde_step(x, v, 0.5, 0.6, 0.7)
    with pytest.raises(ValueError, match="noise_level"):
        sde_step(x, v, 0.6, 0.5, -0.1)


def test_scheduler_schedule_and_noise_match_flow_grpo_reference(tiny_model) -> None:  # noqa: ANN001
    sig = tiny_model.sigmas(10)
    assert sig.shape == (11,) and sig[-1] == 0
    assert sig[:10].tolist() == pytest.approx(REF_SIGMAS, abs=6e-4)
    std_dev_t = sigma_t_of(sig[:10], 0.7, sigma_cap=float(sig[1]))
    assert std_dev_t.tolist() == pytest.approx(REF_STD_DEV_T, rel=6e-3, abs=2e-3)
    step_std = std_dev_t * torch.sqrt(sig[:10] - sig[1:])
    assert step_std.tolist() == pytest.approx(REF_STEP_STD, rel=6e-3, abs=2e-3)


@settings(max_examples=60)
@given(
    s=st.floats(0.01, 0.99),
    frac=st.floats(0.01, 0.99),
    a=st.floats(0.05, 1.5),
    seed=st.integers(0, 2**16),
)
def test_property_log_prob_is_gaussian_and_mean_is_linear(
    s: float, frac: float, a: float, seed: int
) -> None:
    x, v = _xv(seed, (2, 3, 4, 4))
    s_next = s * frac
    step = sde_step(x, v, s, s_next, a, generator=torch.Generator().manual_seed(seed))
    # the mean is affine in (x, v) with Flow-GRPO's coefficients
    sig2 = (a * math.sqrt(s / (1 - s))) ** 2
    dt = s_next - s
    want_mu = x * (1 + sig2 * dt / (2 * s)) + v * (1 + sig2 * (1 - s) / (2 * s)) * dt
    torch.testing.assert_close(step.mean, want_mu, rtol=1e-4, atol=1e-4)
    want = gaussian_log_prob(step.sample, step.mean, step.std)
    ref = torch.distributions.Normal(step.mean, step.std.expand_as(step.mean)).log_prob(step.sample)
    torch.testing.assert_close(want, ref.flatten(1).mean(1), rtol=1e-4, atol=1e-3)
    assert torch.isfinite(step.log_prob).all()


# -- the SDE window (Flow-GRPO-Fast): SDE steps only in [start, stop), the ODE elsewhere ------------------------
def test_window_steps_outside_are_exact_euler_steps_with_no_log_prob(tiny_model) -> None:  # noqa: ANN001
    from flowmodels.sampling import recompute_step, rollout, velocity_at

    ro = rollout(
        tiny_model,
        ["a", "b"],
        [3, 4],
        steps=4,
        height=64,
        width=64,
        decode=False,
        sde_window=(1, 3),
    )
    assert ro.sde_window == (1, 3) and [ro.stochastic(j) for j in range(4)] == [
        False,
        True,
        True,
        False,
    ]
    for j in (0, 3):
        v = velocity_at(tiny_model, ro, j).float()
        euler = ro.latents[:, j] + v * float(ro.sigmas[j + 1] - ro.sigmas[j])
        assert torch.allclose(ro.latents[:, j + 1], euler, atol=1e-6)
        assert torch.equal(ro.log_probs[:, j], torch.zeros(2))
        with pytest.raises(ValueError, match="deterministic ODE step"):
            recompute_step(tiny_model, ro, j)
    for j in (1, 2):
        # a real draw (not the Euler point) whose recomputed log-prob is the recorded one: ratio exactly 1
        v = velocity_at(tiny_model, ro, j).float()
        euler = ro.latents[:, j] + v * float(ro.sigmas[j + 1] - ro.sigmas[j])
        assert (ro.latents[:, j + 1] - euler).abs().mean() > 1e-2
        assert torch.equal(recompute_step(tiny_model, ro, j).log_prob, ro.log_probs[:, j])


def test_window_over_every_step_is_the_plain_sde_and_before_it_the_ode(tiny_model) -> None:  # noqa: ANN001
    from flowmodels.sampling import rollout

    kw = {"steps": 4, "height": 64, "width": 64, "decode": False}
    plain = rollout(tiny_model, ["a"], [7], **kw)
    whole = rollout(tiny_model, ["a"], [7], sde_window=(0, 4), **kw)
    assert torch.equal(plain.latents, whole.latents) and torch.equal(
        plain.log_probs, whole.log_probs
    )
    ode = rollout(tiny_model, ["a"], [7], noise_level=0.0, **kw)
    late = rollout(tiny_model, ["a"], [7], sde_window=(2, 4), **kw)
    assert torch.equal(
        late.latents[:, :3], ode.latents[:, :3]
    )  # same seed, same ODE path up to the window
    assert not torch.allclose(late.latents[:, 3], ode.latents[:, 3])
    with pytest.raises(ValueError, match="sde_window"):
        rollout(tiny_model, ["a"], [7], sde_window=(3, 5), **kw)


@pytest.mark.parametrize("window", [None, (1, 3)])
def test_a_stopped_rollout_is_the_full_rollouts_first_states(tiny_model, window) -> None:  # noqa: ANN001
    from flowmodels.sampling import rollout

    kw = dict(steps=4, height=64, width=64, sde_window=window)
    full = rollout(tiny_model, ["a", "b", "a"], [3, 4, 5], **kw)
    short = rollout(tiny_model, ["a", "b", "a"], [3, 4, 5], stop=2, **kw)
    assert short.images is None and short.latents.shape[1] == 3 and short.log_probs.shape[1] == 2
    assert torch.equal(short.latents, full.latents[:, :3])
    assert torch.equal(short.log_probs, full.log_probs[:, :2])
    assert torch.equal(short.sigmas, full.sigmas)
    with pytest.raises(ValueError, match="stop=5"):
        rollout(tiny_model, ["a"], [0], stop=5, **kw)
