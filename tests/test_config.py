from dataclasses import fields

import pytest

from minigpt import GPTConfig, TrainConfig
from minigpt.config import ConfigError, SampleConfig


def test_head_size_and_round_trip():
    config = GPTConfig(vocab_size=65, d_model=128, num_heads=4)
    assert config.head_size == 32
    assert GPTConfig.from_dict(config.to_dict()) == config
    train = TrainConfig(max_iters=10)
    assert TrainConfig.from_dict(train.to_dict()) == train


@pytest.mark.parametrize("values, parameter", [
    (dict(vocab_size=65, d_model=130, num_heads=4), "d_model"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(vocab_size=65, context_length=0), "context_length"),
    (dict(vocab_size=65, num_heads=0), "num_heads"),
    (dict(vocab_size=65, dropout=1.0), "dropout"),
    (dict(vocab_size=65, num_blocks=2.5), "num_blocks"),
])
def test_bad_model_config_names_the_parameter(values, parameter):
    with pytest.raises(ValueError, match=parameter):
        GPTConfig(**values)


@pytest.mark.parametrize("values, parameter", [
    (dict(batch_size=0), "batch_size"),
    (dict(learning_rate=0), "learning_rate"),
    (dict(min_lr=1.0, learning_rate=1e-3), "min_lr"),
    (dict(warmup_iters=-1), "warmup_iters"),
    (dict(grad_clip=-1), "grad_clip"),
    (dict(device="gpu"), "device"),
])
def test_bad_train_config_names_the_parameter(values, parameter):
    with pytest.raises(ValueError, match=parameter):
        TrainConfig(**values)


def test_unknown_field_is_refused():
    with pytest.raises(ValueError, match="unknown GPTConfig field"):
        GPTConfig.from_dict({"vocab_size": 3, "n_embd": 4})


@pytest.mark.parametrize("cls, values, message", [
    (TrainConfig, dict(batch_size=True), "batch_size must be a whole number >= 1, got True"),
    (TrainConfig, dict(batch_size=0), "batch_size must be a whole number >= 1, got 0"),
    (TrainConfig, dict(batch_size=2.0), "batch_size must be a whole number >= 1, got 2.0"),
    (TrainConfig, dict(learning_rate="0.1"), "learning_rate must be a finite number in (0, 1], got '0.1'"),
    (TrainConfig, dict(learning_rate=float("inf")), "learning_rate must be a finite number in (0, 1]"),
    (TrainConfig, dict(learning_rate=1e10), "learning_rate must be a finite number in (0, 1]"),
    (TrainConfig, dict(learning_rate=float("nan")), "learning_rate must be a finite number"),
    (TrainConfig, dict(weight_decay=float("inf")), "weight_decay must be a finite number in [0, 1]"),
    (TrainConfig, dict(seed="abc"), "seed must be a whole number in [0, 4294967295], got 'abc'"),
    (TrainConfig, dict(seed=10**23), "seed must be a whole number in [0, 4294967295]"),
    (TrainConfig, dict(device=None), "device must be one of auto, cpu, cuda, cuda:N, mps, got None"),
    (TrainConfig, dict(device="cuda:x"), "device must be one of auto, cpu, cuda, cuda:N, mps"),
    (TrainConfig, dict(grad_clip=True), "grad_clip must be a finite number >= 0, got True"),
    (GPTConfig, dict(vocab_size=True), "vocab_size must be a whole number >= 1, got True"),
    (GPTConfig, dict(vocab_size=65, d_model="128"), "d_model must be a whole number >= 1, got '128'"),
    (GPTConfig, dict(vocab_size=65, dropout=float("nan")), "dropout must be a finite number in [0, 1)"),
    (GPTConfig, dict(vocab_size=65, dropout=False), "dropout must be a finite number in [0, 1)"),
    (GPTConfig, dict(vocab_size=65, bias=1), "bias must be True or False, got 1"),
    (SampleConfig, dict(frequency_penalty=1e300), "frequency_penalty must be a finite number in [0, 100]"),
    (SampleConfig, dict(top_k=True), "top_k must be a whole number >= 1 (or None), got True"),
    (SampleConfig, dict(temperature=1e-300), "temperature must be 0 (greedy) or in [0.01, 100]"),
])
def test_types_and_ranges_are_named_value_errors(cls, values, message):
    with pytest.raises(ConfigError) as error:
        cls(**values)
    assert isinstance(error.value, ValueError) and message in str(error.value)


def test_accepted_values():
    assert TrainConfig(learning_rate=1, min_lr=0, seed=0, device="cuda:1").learning_rate == 1
    assert GPTConfig(vocab_size=5, dropout=0).dropout == 0  # a whole number is a fine float
    assert SampleConfig(temperature=0, top_k=None, seed=None).temperature == 0


def test_every_field_says_what_it_means():
    for cls in (GPTConfig, TrainConfig, SampleConfig):
        for f in fields(cls):
            assert f.metadata["help"], f"{cls.__name__}.{f.name} has no help"


def test_presets_name_known_fields_with_allowed_values():
    from minigpt.config import DataConfig
    from minigpt.presets import PRESETS

    owners = {f.name: cls for cls in (DataConfig, GPTConfig, TrainConfig) for f in fields(cls)}
    assert set(PRESETS) == {"baby", "speedrun"}
    assert set(PRESETS["baby"]) == set(PRESETS["speedrun"])  # one preset undoes the other
    for name, values in PRESETS.items():
        unknown = set(values) - set(owners)
        assert not unknown, f"preset {name} sets unknown fields {unknown}"
        for cls in (DataConfig, GPTConfig, TrainConfig):
            mine = {k: v for k, v in values.items() if owners[k] is cls}
            cls(**({"vocab_size": 65} if cls is GPTConfig else {}), **mine)  # checks every value


def test_the_baby_preset_is_the_defaults():
    from minigpt.config import DataConfig
    from minigpt.presets import PRESETS

    defaults = {f.name: f.default for cls in (DataConfig, GPTConfig, TrainConfig) for f in fields(cls)}
    assert {k: defaults[k] for k in PRESETS["baby"]} == PRESETS["baby"]


def test_train_config_new_knobs_are_checked():
    for values, parameter in ((dict(optimizer="sgd"), "optimizer"), (dict(schedule="step"), "schedule"),
                              (dict(muon_lr=0.0), "muon_lr"), (dict(head_lr=-1.0), "head_lr"),
                              (dict(decay_fraction=1.5), "decay_fraction")):
        with pytest.raises(ConfigError, match=parameter):
            TrainConfig(**values)
    assert TrainConfig(head_lr=None).head_lr is None
