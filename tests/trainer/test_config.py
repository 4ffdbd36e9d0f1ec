"""Config parsing: YAML + dotted overrides onto the dataclass defaults, strict keys and types, presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer import grpo, merge, opd, sft
from trainer.config import ConfigError, SampleConfig, dump, load, parse, to_dict
from trainer.epoch import epoch_layout

CONFIGS = Path(__file__).resolve().parents[2] / "trainer" / "configs"
RECIPES = {"grpo": grpo.Config, "sft": sft.Config, "merge": merge.Config, "opd": opd.Config}


def _yaml(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_yaml_then_overrides_onto_defaults(tmp_path):
    path = _yaml(tmp_path, {"kl_beta": 0.01, "sample": {"group_size": 8}, "rewards": {"ocr": 1.0}})
    cfg = load(
        grpo.Config, path, ["sample.cfg=1.0", "optim.lr=3e-4", "rewards.deqa=0.5", "run.out=x"]
    )
    assert cfg.kl_beta == 0.01
    assert cfg.sample.group_size == 8 and cfg.sample.cfg == 1.0
    assert cfg.sample.steps == SampleConfig().steps  # nested groups merge key by key
    assert cfg.optim.lr == 3e-4 and isinstance(
        cfg.optim.lr, float
    )  # YAML 1.1 reads '3e-4' as a string
    assert cfg.rewards == {"ocr": 1.0, "deqa": 0.5}  # dotted override updates a dict item
    assert cfg.run.out == "x"
    assert (
        load(grpo.Config, None, ["run.mixed_precision=no"]).run.mixed_precision == "no"
    )  # YAML 1.1: no -> False


def test_yaml_dict_value_replaces_the_default(tmp_path):
    cfg = load(grpo.Config, _yaml(tmp_path, {"rewards": {"pickscore": 1.0}}))
    assert cfg.rewards == {"pickscore": 1.0}
    cfg = load(grpo.Config, None, ["rewards={ocr: 1.0, deqa: 0.2}"])
    assert cfg.rewards == {"ocr": 1.0, "deqa": 0.2}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["kl_bta=0.1"],
            "unknown config key 'kl_bta' (did you mean kl_beta?); valid keys: model, init",
        ),
        (
            ["sample.grup_size=4"],
            "unknown config key sample.'grup_size' (did you mean sample.group_size?)",
        ),
        (["sample.group_size=four"], "sample.group_size must be an integer"),
        (
            ["kl_normaliser=sum"],
            "kl_normaliser='sum' must be one of 'exact', 'exact_mean', 'flow_grpo'",
        ),
        (["run.ema=maybe"], "run.ema must be true or false"),
        (["kl_beta"], "must look like key=value"),
        (["lora.targets=to_q"], "lora.targets must be a list"),
    ],
)
def test_bad_keys_and_types_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError) as e:
        load(grpo.Config, None, overrides)
    assert message in str(e.value)


def test_value_rewards_must_name_a_scorer_the_recipe_trains_on():
    cfg = load(grpo.Config, None, ["rewards={mini_geneval: 1.0}", "value_rewards=[mini_geneval]"])
    assert cfg.value_rewards == ("mini_geneval",)
    with pytest.raises(ConfigError, match=r"value_rewards names \['ocr'\], which no reward uses"):
        load(grpo.Config, None, ["rewards={mini_geneval: 1.0}", "value_rewards=[ocr]"])


def test_unknown_yaml_key_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match="valid keys: .*steps.*group_size"):
        load(grpo.Config, _yaml(tmp_path, {"sample": {"num_steps": 10}}))


@pytest.mark.parametrize(
    "recipe, overrides, message",
    [
        ("grpo", ["sample.group_size=1"], "GRPO needs >= 2 images per prompt"),
        ("grpo", ["partitions={ocr: 1}"], "task 'ocr' has no prompt set"),
        ("grpo", ["sample.noise_level=0"], "noise_level must be > 0"),
        ("opd", ["teachers={geneval: a, ocr: b}"], "task 'pickscore' has prompts but no teacher"),
        ("opd", ["soft_routing={ocr: {nobody: 1.0}}"], "names teachers ['nobody']"),
        ("opd", ["mar_sigma_max=0"], "mar_sigma_max=0.0 must be in (0, 1]"),
        ("opd", ["mar_sigma_max=1.5"], "mar_sigma_max=1.5 must be in (0, 1]"),
        ("opd", ["step_weight=flat"], "step_weight='flat' must be one of 'kl', 'uniform'"),
        (
            "opd",
            ["task_mix={geneval: 3, t2i: 1}"],
            "task_mix names ['t2i'], which have no prompt set",
        ),
        ("opd", ["task_mix={geneval: 3, ocr: 1}"], "task_mix gives no share to ['pickscore']"),
        (
            "opd",
            ["task_mix={geneval: 0, ocr: 0, pickscore: 0}"],
            "task_mix shares must be >= 0 and not all 0",
        ),
        ("sft", ["teachers={geneval: a}"], "task 'ocr' has prompts but no teacher"),
        ("merge", ["output=merged"], "output=merged needs model"),
        ("merge", ["density=0"], "density=0.0 must be in (0, 1]"),
        ("grpo", ["run.max_steps=0"], "run.max_steps=0 must be >= 1"),
    ],
)
def test_invalid_values_fail_at_parse_time(recipe, overrides, message):
    with pytest.raises(ConfigError) as e:
        load(RECIPES[recipe], None, overrides)
    assert message in str(e.value)


def test_parse_exits_with_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        parse(grpo.Config, ["sample.group_size=1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_help_lists_every_key(capsys):
    with pytest.raises(SystemExit):
        parse(opd.Config, ["--help"])
    out = capsys.readouterr().out
    assert (
        "mar_lambda = 0.02" in out
        and "sample.group_size = 24" in out
        and "run.out = 'runs/opd'" in out
    )


def test_resolved_config_round_trips(tmp_path):
    cfg = load(
        opd.Config, None, ["mar_lambda=0.04", "sample.size=256", "soft_routing={ocr: {ocr: 1.0}}"]
    )
    path = dump(cfg, tmp_path / "config.yaml")
    again = load(opd.Config, path)
    assert again == cfg and to_dict(again) == to_dict(cfg)


@pytest.mark.parametrize("preset", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_preset_parses_into_its_recipe(preset):
    recipe = (
        preset.removesuffix(".yaml").removeprefix("mini_").split("_")[0]
    )  # mini_<recipe>_...: mini world
    cfg = load(RECIPES[recipe], CONFIGS / preset)
    assert cfg is not None


def test_paper_grpo_preset_derives_flow_grpo_per_gpu_numbers():
    cfg = load(grpo.Config, CONFIGS / "grpo_geneval.yaml")
    assert (cfg.sample.groups_per_epoch, cfg.sample.group_size, cfg.sample.batch_size) == (
        48,
        24,
        9,
    )
    assert cfg.sample.train_timesteps == 9
    # Flow-GRPO's 32-GPU recipe: 36 images per GPU, 4 batches of 9, 2 optimizer steps -> accumulate 2
    assert epoch_layout(cfg.sample, 32) == (36, 4, 2)
    assert epoch_layout(cfg.sample, 8) == (144, 16, 8)
    assert epoch_layout(cfg.sample, 1) == (1152, 128, 64)
    with pytest.raises(ConfigError, match="not a multiple of sample.batch_size=9"):
        epoch_layout(cfg.sample, 3)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["sample.sde_window_size=6"],
            "hold sample.sde_window_size=6",
        ),  # default range [0, 5) of 10 steps
        (
            ["sample.sde_window_size=2", "sample.sde_window_range=[4, 11]"],
            "0 <= lo < hi <= sample.steps=10",
        ),
        (["sample.sde_window_size=-1"], "must be >= 0"),
    ],
)
def test_sde_window_that_cannot_fit_fails_at_parse_time(overrides, message):
    with pytest.raises(ConfigError) as e:
        load(grpo.Config, None, overrides)
    assert message in str(e.value)


@settings(max_examples=50)
@given(
    steps=st.integers(2, 12),
    data=st.data(),
    seed=st.integers(0, 1000),
)
def test_sde_window_is_drawn_inside_its_range_the_same_on_every_call(steps, data, seed):
    lo = data.draw(st.integers(0, steps - 1))
    hi = data.draw(st.integers(lo + 1, steps))
    size = data.draw(st.integers(1, hi - lo))
    s = load(
        grpo.Config,
        None,
        [
            f"sample.steps={steps}",
            f"sample.sde_window_size={size}",
            f"sample.sde_window_range=[{lo}, {hi}]",
        ],
    ).sample
    starts = set()
    for epoch in range(40):
        w = s.sde_window(seed, epoch)
        assert w == s.sde_window(seed, epoch)  # every process draws the same window
        assert lo <= w[0] and w[1] <= hi and w[1] - w[0] == size
        assert s.trained_steps(w) == list(range(*w))
        starts.add(w[0])
    assert s.train_timesteps == size
    if hi - lo - size <= 3:
        assert starts == set(
            range(lo, hi - size + 1)
        )  # 40 epochs reach every start of a short range


def test_without_a_window_the_first_fraction_of_steps_is_trained():
    s = load(grpo.Config, None, []).sample
    assert s.sde_window(0, 0) is None and s.trained_steps(None) == list(range(9))
    assert load(grpo.Config, None, ["sample.sde_window_size=2"]).sample.window_range == (0, 5)


def test_reward_norm_is_sum_or_decoupled():
    assert load(grpo.Config, None, ["rewards={mini_geneval: 1.0}"]).reward_norm == "sum"
    cfg = load(grpo.Config, None, ["rewards={mini_geneval: 1.0}", "reward_norm=decoupled"])
    assert cfg.reward_norm == "decoupled"
    with pytest.raises(ConfigError, match="reward_norm"):
        load(grpo.Config, None, ["rewards={mini_geneval: 1.0}", "reward_norm=gdpo"])
