import math

import pytest
import torch

from conftest import tiny_pose_model
from posecli.models import DDIMSampler, NoiseSchedule, heatmap_to_signal, signal_to_heatmap

torch.set_num_threads(1)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_schedule_is_monotone_and_ends_near_zero(kind):
    s = NoiseSchedule(1000, kind)
    ab = s.alphas_cumprod
    assert ab.shape == (1000,)
    assert torch.all(ab[1:] < ab[:-1])
    assert 0.99 < float(ab[0]) < 1.0
    assert float(ab[-1]) < 1e-3
    # ᾱ is the cumulative product of α = 1 − β (not α itself).
    assert torch.allclose(ab, torch.cumprod(1 - s.betas, 0))
    assert float(s.alpha_bar(torch.tensor(-1))) == 1.0


def test_unknown_schedule_kind_is_rejected():
    with pytest.raises(ValueError):
        NoiseSchedule(10, "quadratic")


def test_q_sample_uses_sqrt_alpha_bar():
    s = NoiseSchedule(1000, "linear")
    x0, eps = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    t = torch.tensor([0, 500, 999])
    xt = s.q_sample(x0, t, eps)
    for i, ti in enumerate(t.tolist()):
        ab = float(torch.prod(1 - s.betas[: ti + 1]))
        expected = math.sqrt(ab) * x0[i] + math.sqrt(1 - ab) * eps[i]
        assert torch.allclose(xt[i], expected, atol=1e-6)


def test_signal_scaling_round_trip():
    h = torch.rand(2, 17, 8, 6)
    x = heatmap_to_signal(h, 1.0)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert torch.allclose(heatmap_to_signal(torch.tensor([0.0, 1.0]), 2.0), torch.tensor([-2.0, 2.0]))
    assert torch.allclose(signal_to_heatmap(heatmap_to_signal(h, 1.5), 1.5), h, atol=1e-6)


def test_set_steps_spaces_timesteps_and_ends_at_clean():
    sampler = DDIMSampler(NoiseSchedule(1000), steps=1)
    assert sampler.timesteps == [999, -1]
    sampler.set_steps(2)
    assert sampler.timesteps == [999, 499, -1]
    sampler.set_steps(4)
    assert sampler.timesteps == [999, 749, 499, 249, -1]
    with pytest.raises(ValueError):
        sampler.set_steps(0)


def test_ddim_step_is_consistent_with_the_forward_process():
    # With the true x0 and eta = 0, a DDIM step from x_t = q(x0, t, ε) lands on q(x0, t_prev, ε).
    s = NoiseSchedule(1000)
    sampler = DDIMSampler(s, steps=4)
    x0 = heatmap_to_signal(torch.rand(2, 3, 5, 4))  # inside the clip range
    eps = torch.randn_like(x0)
    xt = s.q_sample(x0, torch.tensor([749, 749]), eps)
    x_prev = sampler.step(x0, 749, xt)  # next step in the schedule: 499
    assert torch.allclose(x_prev, s.q_sample(x0, torch.tensor([499, 499]), eps), atol=1e-5)
    assert torch.equal(sampler.step(x0, 249, xt), x0)  # the last step returns x̂0


def test_ddim_one_step_returns_the_models_x0_exactly():
    model = tiny_pose_model(window=3).eval()
    with torch.no_grad():
        cond = model.fuse(model.encode_frames(torch.rand(6, 3, 64, 64) * 255).view(2, 3, -1))
    seen = []

    def denoise(x_t, t):
        seen.append((x_t.clone(), t.clone()))
        return model.denoise(x_t, cond, t)

    sampler = DDIMSampler(NoiseSchedule(1000), steps=1, seed=3)
    out = sampler.sample(denoise, (2, 17, 16, 16))
    assert len(seen) == 1
    x_t, t = seen[0]
    assert t.tolist() == [999, 999]
    expected_noise = torch.randn((1, 17, 16, 16), generator=torch.Generator().manual_seed(3))
    assert torch.equal(x_t, expected_noise.expand(2, -1, -1, -1))
    with torch.no_grad():
        direct = model.denoise(x_t, cond, t)
    assert torch.equal(out, direct)


def test_sampler_is_reproducible_per_seed():
    weights = torch.randn(1, 3, 1, 1)

    def denoise(x_t, t):  # a fixed, input-dependent stand-in for the network
        return torch.tanh(x_t * weights + t.float().view(-1, 1, 1, 1) / 1000)

    shape = (2, 3, 6, 5)
    a = DDIMSampler(NoiseSchedule(100), steps=3, seed=7).sample(denoise, shape)
    b = DDIMSampler(NoiseSchedule(100), steps=3, seed=7).sample(denoise, shape)
    c = DDIMSampler(NoiseSchedule(100), steps=3, seed=8).sample(denoise, shape)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # Re-seeded on every call: the same sampler object repeats itself.
    sampler = DDIMSampler(NoiseSchedule(100), steps=3, seed=7)
    assert torch.equal(sampler.sample(denoise, shape), sampler.sample(denoise, shape))
    # Noise is drawn per item and broadcast, so identical inputs give identical rows.
    assert torch.equal(a[0], a[1])


def _alpha_bar(schedule: NoiseSchedule, t: int) -> float:
    """ᾱ_t = ∏_{s≤t} (1 − β_s), from the betas (ᾱ_{−1} = 1)."""
    return float(torch.prod(1.0 - schedule.betas[: t + 1])) if t >= 0 else 1.0


def _paper_ddim_step(x0_hat, x_t, ab_t, ab_prev, clip):
    """Song et al. (ICLR 2021), eq. (12) with σ = 0 (η = 0 in eq. 16), written out from the paper.

    x̂0 is first clipped to the signal range (the sampler's documented choice, as in DDPM code).
    """
    x0_hat = x0_hat.clamp(-clip, clip)
    eps_hat = (x_t - math.sqrt(ab_t) * x0_hat) / math.sqrt(1.0 - ab_t)  # eq. (12), "predicted noise"
    return math.sqrt(ab_prev) * x0_hat + math.sqrt(1.0 - ab_prev) * eps_hat  # x0 part + "direction to x_t"


@pytest.mark.parametrize("t, t_prev", [(749, 499), (999, 249), (300, 299)])
@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_ddim_step_follows_the_papers_equations(t, t_prev, scale):
    schedule = NoiseSchedule(1000)
    sampler = DDIMSampler(schedule, steps=4, signal_scale=scale)
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn((2, 3, 5, 4), generator=g, dtype=torch.float64)
    x0_hat = 2.5 * scale * torch.randn((2, 3, 5, 4), generator=g, dtype=torch.float64)  # partly out of range
    out = sampler.step(x0_hat, t, x_t, t_prev)
    expected = _paper_ddim_step(x0_hat, x_t, _alpha_bar(schedule, t), _alpha_bar(schedule, t_prev), scale)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)


def test_sampling_follows_the_papers_equations():
    schedule, shape, seed = NoiseSchedule(100), (2, 3, 6, 5), 4
    weights = torch.randn(1, 3, 1, 1)

    def denoise(x_t, t):  # a fixed, input-dependent stand-in for the network, sometimes beyond ±1
        return 1.6 * torch.tanh(x_t * weights + t.float().view(-1, 1, 1, 1) / 100)

    sampler = DDIMSampler(schedule, steps=3, seed=seed)
    out = sampler.sample(denoise, shape)

    # The documented initial noise: one item from a generator seeded with ``seed``, broadcast.
    x = torch.randn((1, *shape[1:]), generator=torch.Generator().manual_seed(seed)).expand(shape)
    times = [99, 66, 32, -1]  # evenly spaced in [−1, 99], rounded
    for t, t_prev in zip(times[:-1], times[1:]):
        x0_hat = denoise(x, torch.full((shape[0],), t))
        if t_prev >= 0:
            x = _paper_ddim_step(x0_hat, x, _alpha_bar(schedule, t), _alpha_bar(schedule, t_prev), 1.0)
    assert sampler.timesteps == times
    torch.testing.assert_close(out, x0_hat, rtol=1e-5, atol=1e-6)
