import pytest

from minigpt import GPTConfig, TrainConfig


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
