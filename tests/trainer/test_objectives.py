"""The recipes' pure math against hand-computed values, independent formulas and properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flowmodels.sampling import sde_step, sigma_t_of
from trainer.objectives import (
    VelocityWeight,
    decoupled_advantages,
    flow_matching_loss,
    gaussian_kl,
    group_advantages,
    mix_targets,
    noisy_latents,
    opd_loss,
    opd_weight,
    ppo_clip_loss,
    routing_weights,
    train_sigmas,
    velocity_gap,
    velocity_weight,
)

# -- advantages --------------------------------------------------------------------------------------------------


def test_group_advantages_by_hand_global_std():
    r = torch.tensor([1.0, 3.0, 2.0, 2.0])  # groups [1, 3] and [2, 2]
    # global population std of [1, 3, 2, 2]: mean 2, var (1 + 1 + 0 + 0) / 4 = 0.5
    std = math.sqrt(0.5)
    adv = group_advantages(r, 2, std="global", eps=0.0, clip=None)
    assert torch.allclose(adv, torch.tensor([-1 / std, 1 / std, 0.0, 0.0]), atol=1e-6)


def test_group_advantages_per_group_std_and_clip():
    r = torch.tensor([0.0, 10.0, 1.0, 2.0])
    adv = group_advantages(r, 2, std="group", eps=0.0, clip=None)
    assert torch.allclose(adv, torch.tensor([-1.0, 1.0, -1.0, 1.0]))
    r = torch.zeros(40)
    r[-1] = 100.0  # a lone outlier's z-score is sqrt(39) = 6.2 > 5
    clipped = group_advantages(r, 40, std="global", clip=5.0)
    assert clipped.max().item() == 5.0 and clipped.min().item() > -5.0


def test_zero_variance_group_gives_exact_zero_not_nan():
    adv = group_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0, 0.1, 0.1, 0.1, 0.1]), group_size=4)
    assert torch.isfinite(adv).all() and torch.all(adv[4:] == 0)
    # all groups tied: std 0 everywhere, still 0 and finite
    adv = group_advantages(torch.full((6,), 0.7), group_size=3, std="group")
    assert torch.all(adv == 0)


@pytest.mark.parametrize(
    "rewards, g, msg",
    [
        (torch.ones(4), 1, ">= 2"),
        (torch.ones(5), 2, "multiple"),
        (torch.tensor([1.0, float("nan")]), 2, "NaN"),
    ],
)
def test_group_advantages_rejects_bad_input(rewards, g, msg):
    with pytest.raises(ValueError, match=msg):
        group_advantages(rewards, g)


@settings(max_examples=40)
@given(st.lists(st.floats(-10, 10), min_size=2, max_size=5), st.integers(2, 4))
def test_advantages_sum_to_zero_in_each_group(values, groups):
    r = torch.tensor(values * groups, dtype=torch.float64) + torch.arange(groups).repeat_interleave(
        len(values)
    )
    adv = group_advantages(r, len(values), clip=None).view(groups, -1)
    assert torch.allclose(adv.sum(1), torch.zeros(groups, dtype=adv.dtype), atol=1e-6)


# -- PPO ---------------------------------------------------------------------------------------------------------


# GDPO (arXiv 2601.05242): per-reward group normalisation, weighted sum, batch normalisation
def test_decoupled_advantages_by_hand():
    # two groups of 2; rewards (verdict, quality) weighted 0.6 / 0.4
    parts = torch.tensor([[1.0, 0.5], [0.0, 0.7], [1.0, 0.9], [1.0, 0.8]])
    weights = torch.tensor([[0.6, 0.4]] * 4)
    eps = 1e-4
    # group 1: verdict centred (0.5, -0.5) / (0.5 + eps), quality (-0.1, 0.1) / (0.1 + eps)
    a1 = 0.5 / (0.5 + eps)
    q1 = 0.1 / (0.1 + eps)
    s1 = 0.6 * a1 - 0.4 * q1  # first image; the second is its negative
    # group 2: the verdict is tied (exactly 0), quality (0.05, -0.05) / (0.05 + eps)
    s2 = 0.4 * 0.05 / (0.05 + eps)
    total = [s1, -s1, s2, -s2]
    std = math.sqrt(sum(x * x for x in total) / 4)
    want = [x / (std + eps) for x in total]
    got = decoupled_advantages(parts, weights, 2)
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    # the summed reward would give quality almost nothing: group 2's images differ by 0.04 against group 1's 0.52
    summed = group_advantages((parts * weights).sum(1), 2)
    assert abs(summed[2]) < 0.15 * abs(summed[0])
    assert abs(got[2]) > 0.5 * abs(got[0])


@settings(max_examples=60, deadline=None)
@given(
    # rewards on a 0.1 grid: an affine map keeps their differences far above float64's resolution (a difference of
    # 1e-38 next to 0 is real, next to 1.0 it rounds away, and no normalisation can keep what the floats lost)
    st.lists(st.integers(0, 10), min_size=12, max_size=12),
    st.floats(0.1, 10),
    st.floats(-3, 3),
)
def test_decoupled_advantages_ignore_each_rewards_scale_and_offset(values, a, b):
    parts = torch.tensor(values, dtype=torch.float64).view(6, 2) / 10  # 3 groups of 2, 2 rewards
    weights = torch.tensor([[0.3, 0.7]] * 6, dtype=torch.float64)
    base = decoupled_advantages(parts, weights, 2, eps=0.0, clip=None)
    moved = parts.clone()
    moved[:, 1] = a * moved[:, 1] + b
    again = decoupled_advantages(moved, weights, 2, eps=0.0, clip=None)
    assert torch.allclose(torch.nan_to_num(base), torch.nan_to_num(again), atol=1e-6)
    # each group's advantages sum to 0 (when defined)
    assert torch.nan_to_num(base).view(3, 2).sum(1).abs().max() < 1e-9


def test_decoupled_advantages_skip_a_reward_the_task_does_not_use():
    nan = float("nan")
    # group 1 (a GenEval prompt) uses rewards 0 and 2, group 2 (an OCR prompt) rewards 1 and 2
    parts = torch.tensor([[1.0, nan, 0.2], [0.0, nan, 0.4], [nan, 0.3, 0.5], [nan, 0.9, 0.5]])
    weights = torch.tensor([[1.0, 0.0, 0.5], [1.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.0, 2.0, 0.5]])
    got = decoupled_advantages(parts, weights, 2, clip=None)
    assert torch.isfinite(got).all()
    # one reward alone: the group-std advantages of that reward, rescaled over the batch
    one = torch.tensor([[1.0], [0.0], [0.3], [0.9]])
    alone = decoupled_advantages(one, torch.ones(4, 1), 2, clip=None)
    ref = group_advantages(one[:, 0], 2, std="group")
    assert torch.allclose(alone, ref / (ref.std(correction=0) + 1e-4), atol=1e-6)
    with pytest.raises(ValueError, match="NaN or inf"):
        decoupled_advantages(parts, torch.ones(4, 3), 2)
    with pytest.raises(ValueError, match="share their reward weights"):
        decoupled_advantages(torch.rand(4, 2), torch.tensor([[1.0, 0], [0, 1], [1, 0], [1, 0]]), 2)
    with pytest.raises(ValueError, match=r"\[M\*G, K\] alike"):
        decoupled_advantages(torch.rand(5, 2), torch.ones(5, 2), 2)


def test_identical_logprobs_give_ratio_one_and_minus_mean_advantage():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    adv = torch.tensor([1.0, -2.0, 0.5])
    out = ppo_clip_loss(logp.clone(), logp, adv, 1e-4)
    assert torch.equal(out.ratio, torch.ones(3))
    assert out.loss.item() == pytest.approx(-adv.mean().item())
    assert out.clipfrac.item() == 0.0 and out.approx_kl.item() == 0.0


def test_ppo_clip_stops_gradient_beyond_the_trust_region():
    old = torch.zeros(2)
    new = torch.tensor(
        [0.5, -0.5], requires_grad=True
    )  # ratios e^0.5 (> 1 + eps), e^-0.5 (< 1 - eps)
    adv = torch.tensor([1.0, 1.0])
    out = ppo_clip_loss(new, old, adv, clip_range=0.2)
    # sample 0: A > 0 and ratio above 1 + eps -> the clipped (constant) branch wins: no gradient
    # sample 1: A > 0 and ratio below 1 - eps -> max picks -A*ratio (unclipped): gradient -A*ratio/2
    out.loss.backward()
    assert new.grad[0].item() == 0.0
    assert new.grad[1].item() == pytest.approx(-math.exp(-0.5) / 2)
    assert out.loss.item() == pytest.approx((-1.2 - math.exp(-0.5)) / 2)
    assert out.clipfrac.item() == 1.0


# -- KL and w(t) -------------------------------------------------------------------------------------------------


def test_exact_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu_a, mu_b = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    sigma_t, dt = 0.8, -0.1
    std = sigma_t * math.sqrt(-dt)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu_a, std), torch.distributions.Normal(mu_b, std)
    ).sum(dim=(1, 2, 3))
    got = gaussian_kl(mu_a, mu_b, sigma_t, dt, "exact")
    assert torch.allclose(got, ref, rtol=1e-5)
    assert torch.allclose(gaussian_kl(mu_a, mu_b, sigma_t, dt, "exact_mean"), ref / 32, rtol=1e-5)
    flow_grpo = ((mu_a - mu_b) ** 2).mean(dim=(1, 2, 3)) / (2 * sigma_t**2)
    assert torch.allclose(gaussian_kl(mu_a, mu_b, sigma_t, dt, "flow_grpo"), flow_grpo, rtol=1e-6)


def test_opd_weight_by_hand():
    # t = 0.5, next 0.4, a = 0.7: sigma_t = 0.7 sqrt(0.5 / 0.5) = 0.7
    w = opd_weight(0.5, 0.4, 0.7)
    expected = 0.1 / 2 * (0.7 * 0.5 / (2 * 0.5) + 1 / 0.7) ** 2
    assert w.item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="noise_level"):
        opd_weight(0.5, 0.4, 0.0)


@settings(max_examples=60)
@given(
    # below 0.999: the weight is computed in float32, whose 1 - s near 1 loses the test's precision (s = 0.99999:
    # 1e-3 relative); schedules reach s = 1 only exactly, the example below
    s=st.floats(0.05, 0.999),
    frac=st.floats(0.05, 0.95),
    a=st.floats(0.1, 1.2),
    normaliser=st.sampled_from(["exact", "exact_mean", "flow_grpo"]),
    seed=st.integers(0, 2**16),
)
@example(s=1.0, frac=0.96, a=0.7, normaliser="exact", seed=0)  # the first step, s = 1 (capped)
def test_kl_of_transition_means_equals_weighted_velocity_gap(s, frac, a, normaliser, seed):
    """docs/method.md 5.4: KL(pi_theta || pi_T) = w(t) ||v_theta - v_T||^2, for each named normaliser."""
    g = torch.Generator().manual_seed(seed)
    x, v, v_t = (torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    s_next = s * frac
    cap = 0.9 if s == 1.0 else None  # s = 1 divides by zero without the cap
    step_s = sde_step(x, v, s, s_next, a, sigma_cap=cap, noise=torch.zeros_like(x))
    step_t = sde_step(x, v_t, s, s_next, a, sigma_cap=cap, noise=torch.zeros_like(x))
    kl = gaussian_kl(step_s.mean, step_t.mean, step_s.sigma_t, s_next - s, normaliser)
    gap = velocity_gap(v, v_t, velocity_weight(s, s_next, a, cap, normaliser))
    assert torch.allclose(kl.double(), gap.double(), rtol=2e-4)
    assert torch.equal(sigma_t_of(torch.tensor(s), a, cap).reshape(()), step_s.sigma_t.flatten()[0])


# -- OPD ---------------------------------------------------------------------------------------------------------


def _vw():
    return velocity_weight(0.8, 0.6, 0.7, None, "exact_mean")


def test_teacher_equal_to_student_gives_exactly_zero():
    torch.manual_seed(1)
    v = torch.randn(4, 2, 3, 3, requires_grad=True)
    for mode in ("direct", "pg"):
        terms = opd_loss(
            mode, v, v.detach().clone(), _vw(), logp_new=torch.zeros(4), logp_old=torch.zeros(4)
        )
        assert terms.distill.item() == 0.0 and terms.gap.item() == 0.0
    terms = opd_loss(
        "direct", v, v.detach().clone(), _vw(), v_anchor=v.detach().clone(), mar_lambda=0.5
    )
    assert terms.loss.item() == 0.0
    terms.loss.backward()
    assert torch.all(v.grad == 0)


def test_direct_loss_gradient_is_the_analytic_one():
    torch.manual_seed(2)
    v = torch.randn(2, 1, 2, 2, requires_grad=True)
    v_t = torch.randn(2, 1, 2, 2)
    vw = _vw()
    opd_loss("direct", v, v_t, vw).loss.backward()
    # d/dv mean_b w mean_d (v - v_T)^2 = w * 2 (v - v_T) / (D * B)
    expected = vw.weight * 2 * (v.detach() - v_t) / (4 * 2)
    assert torch.allclose(v.grad, expected, rtol=1e-5)


def test_pg_gradient_flows_only_through_the_ratio():
    torch.manual_seed(3)
    v = torch.randn(3, 1, 2, 2, requires_grad=True)
    v_t = torch.randn(3, 1, 2, 2)
    logp = torch.zeros(3, requires_grad=True)
    terms = opd_loss("pg", v, v_t, _vw(), logp_new=logp, logp_old=torch.zeros(3), clip_range=1e-4)
    terms.loss.backward()
    assert v.grad is None  # the dense reward is detached
    # at ratio 1 the surrogate's gradient wrt logp_new is -A / B with A = -w ||v - v_T||^2
    reward = -velocity_gap(v.detach(), v_t, _vw())
    assert torch.allclose(logp.grad, -reward / 3, rtol=1e-5)


def test_mixed_adds_the_task_advantage():
    v = torch.zeros(2, 1, 1, 1)
    logp = torch.zeros(2, requires_grad=True)
    task = torch.tensor([1.0, -1.0])
    terms = opd_loss(
        "mixed", v, v.clone(), _vw(), logp_new=logp, logp_old=torch.zeros(2), task_advantages=task
    )
    terms.loss.backward()
    assert torch.allclose(logp.grad, -task / 2)
    with pytest.raises(ValueError, match="task_advantages"):
        opd_loss("mixed", v, v, _vw(), logp_new=logp, logp_old=torch.zeros(2))


def test_pg_and_mixed_advantages_are_clamped_like_the_authors_code():
    """The authors' kl_only: clamp(kl_scale * kl, +-5); mixed: clamp(clamp(task, +-5) + kl_scale * kl, +-5). At
    ratio 1 the surrogate's gradient wrt logp_new is -A / B, so it reads the clamped advantages."""
    v = torch.zeros(3, 1, 1, 1)
    v_t = torch.tensor([0.5, 4.0, 10.0]).view(
        3, 1, 1, 1
    )  # gaps w ||dv||^2 with w = 1: 0.25, 16, 100
    vw = VelocityWeight(torch.ones(()), "mean")
    logp = torch.zeros(3, requires_grad=True)
    opd_loss("pg", v, v_t, vw, logp_new=logp, logp_old=torch.zeros(3)).loss.backward()
    assert torch.allclose(logp.grad, -torch.tensor([-0.25, -5.0, -5.0]) / 3)
    logp.grad = None
    task = torch.tensor([9.0, 9.0, -9.0])  # clamped to 5, 5, -5 first
    opd_loss(
        "mixed", v, v_t, vw, logp_new=logp, logp_old=torch.zeros(3), task_advantages=task
    ).loss.backward()
    # 5 - 0.25 = 4.75; 5 - 16 = -11 -> -5; -5 - 100 -> -5
    assert torch.allclose(logp.grad, -torch.tensor([4.75, -5.0, -5.0]) / 3)
    logp.grad = None
    opd_loss(
        "pg", v, v_t, vw, logp_new=logp, logp_old=torch.zeros(3), adv_clip=None
    ).loss.backward()
    assert torch.allclose(logp.grad, -torch.tensor([-0.25, -16.0, -100.0]) / 3)


def test_mar_gradient_step_moves_toward_the_anchor():
    torch.manual_seed(4)
    v = torch.randn(2, 2, 2, 2, requires_grad=True)
    anchor = torch.randn(2, 2, 2, 2)
    terms = opd_loss("direct", v, v.detach().clone(), _vw(), v_anchor=anchor, mar_lambda=0.02)
    assert terms.distill.item() == 0.0 and terms.mar.item() > 0
    terms.loss.backward()
    before = (v.detach() - anchor).pow(2).sum()
    after = (v.detach() - 10.0 * v.grad - anchor).pow(2).sum()
    assert after < before
    assert terms.mar.item() == pytest.approx(0.02 * terms.anchor_gap.item(), rel=1e-6)


def test_hard_and_soft_routing_weights():
    w = routing_weights(
        ["ocr", "geneval", "ocr"], ["t_geneval", "t_ocr"], {"ocr": "t_ocr", "geneval": "t_geneval"}
    )
    assert torch.equal(w, torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
    soft = routing_weights(["mix"], ["a", "b"], {}, soft={"mix": {"a": 3.0, "b": 1.0}})
    assert torch.allclose(soft, torch.tensor([[0.75, 0.25]]))
    with pytest.raises(KeyError, match="no teacher for task 'pickscore'"):
        routing_weights(["pickscore"], ["a"], {"ocr": "a"})


def test_mix_targets_is_bitwise_the_teacher_under_hard_routing():
    torch.manual_seed(5)
    alpha = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    rows = {0: torch.tensor([1]), 1: torch.tensor([0, 2])}
    v0, v1 = torch.randn(1, 2, 2, 2), torch.randn(2, 2, 2, 2)
    out = mix_targets({0: v0, 1: v1}, alpha, rows)
    assert torch.equal(out[1], v0[0]) and torch.equal(out[0], v1[0]) and torch.equal(out[2], v1[1])
    soft = mix_targets(
        {0: v0.expand(3, -1, -1, -1), 1: v1[:1].expand(3, -1, -1, -1)},
        torch.tensor([[0.25, 0.75]] * 3),
        {0: torch.arange(3), 1: torch.arange(3)},
    )
    assert torch.allclose(soft[0], 0.25 * v0[0] + 0.75 * v1[0])


# -- flow matching -----------------------------------------------------------------------------------------------


def test_flow_matching_loss_zero_at_the_true_velocity():
    torch.manual_seed(6)
    x0, eps = torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2)
    assert flow_matching_loss(eps - x0, x0, eps).item() == 0.0
    assert flow_matching_loss(eps - x0 + 1.0, x0, eps).item() == pytest.approx(1.0)
    xs = noisy_latents(x0, eps, torch.tensor([0.0, 1.0]))
    assert torch.equal(xs[0], x0[0]) and torch.equal(xs[1], eps[1])


def test_train_sigmas_are_shifted_into_0_1():
    g = torch.Generator().manual_seed(0)
    s = train_sigmas(10_000, g, scheme="uniform", shift=3.0)
    assert 0 <= s.min() and s.max() <= 1
    # shift 3 maps u = 0.5 to 0.75: the median moves up accordingly
    assert s.median().item() == pytest.approx(0.75, abs=0.02)
