import math

import pytest
import torch

from minigpt import GPT, TrainConfig, Trainer, estimate_loss, learning_rate, train
from minigpt.checkpoint import CheckpointError, load_checkpoint
from minigpt.train import configure_optimizer, resolve_device


def small_train_config(**overrides) -> TrainConfig:
    values = dict(batch_size=8, max_iters=40, learning_rate=3e-3, min_lr=3e-4, warmup_iters=5,
                  eval_interval=10, eval_iters=4, seed=11, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


def test_learning_rate_schedule_points():
    kw = dict(max_lr=1.0, min_lr=0.1, warmup_iters=10, max_iters=110)
    assert learning_rate(0, **kw) == pytest.approx(0.1)
    assert learning_rate(9, **kw) == pytest.approx(1.0)
    assert learning_rate(10, **kw) == pytest.approx(1.0)
    assert learning_rate(60, **kw) == pytest.approx(0.55)  # half way down the cosine
    assert learning_rate(110, **kw) == pytest.approx(0.1)
    assert learning_rate(500, **kw) == pytest.approx(0.1)
    rates = [learning_rate(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_no_weight_decay_on_biases_norms_embeddings(tiny_model):
    optimizer = configure_optimizer(tiny_model, TrainConfig(weight_decay=0.1), torch.device("cpu"))
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"])
    decayed = {id(p) for p in decay["params"]}
    assert id(tiny_model.token_embedding.weight) not in decayed
    assert id(tiny_model.position_embedding.weight) not in decayed
    assert all(id(p) not in decayed for n, p in tiny_model.named_parameters() if "ln" in n or "bias" in n)
    total = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert total == tiny_model.num_parameters()


def test_estimate_loss_restores_mode_and_builds_no_graph(tiny_model, splits):
    for mode in (True, False):
        tiny_model.train(mode)
        losses = estimate_loss(tiny_model, {"train": splits[0], "val": splits[1]}, 3, 4, 16)
        assert tiny_model.training is mode
        assert set(losses) == {"train", "val"} and all(isinstance(v, float) for v in losses.values())
    assert all(p.grad is None for p in tiny_model.parameters())


def test_loss_falls_on_a_tiny_corpus(tiny_model, char_tokenizer, splits):
    result = train(tiny_model, char_tokenizer, *splits, small_train_config(max_iters=60), progress=False)
    assert result.history[0]["step"] == 0 and result.history[-1]["step"] == 60
    assert result.history[-1]["train"] < result.history[0]["train"] - 0.8
    assert abs(result.history[0]["val"] - math.log(char_tokenizer.vocab_size)) < 0.1
    assert len(result.train_losses) == 60


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path, tiny_config, char_tokenizer, splits):
    config = small_train_config(max_iters=30, eval_interval=10)
    torch.manual_seed(0)
    whole = Trainer(GPT(tiny_config), char_tokenizer, *splits, config, tmp_path / "a", progress=False).run()

    torch.manual_seed(0)
    first = Trainer(GPT(tiny_config), char_tokenizer, *splits, config, tmp_path / "b", progress=False)
    first.run(until=20)
    torch.manual_seed(123)  # a different initialisation: everything must come from the checkpoint
    second = Trainer(GPT(tiny_config), char_tokenizer, *splits, config, tmp_path / "b", progress=False)
    second.resume(tmp_path / "b" / "ckpt.pt")
    resumed = second.run()

    assert resumed.train_losses == whole.train_losses  # bit for bit on the CPU
    assert resumed.history == whole.history
    a = load_checkpoint(tmp_path / "a" / "ckpt.pt").model.state_dict()
    b = load_checkpoint(tmp_path / "b" / "ckpt.pt").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stop_off_the_evaluation_schedule_resumes_to_the_same_history(tmp_path, tiny_config,
                                                                     char_tokenizer, splits):
    config = small_train_config(max_iters=30, eval_interval=10)
    torch.manual_seed(0)
    whole = Trainer(GPT(tiny_config), char_tokenizer, *splits, config, tmp_path / "a", progress=False).run()
    torch.manual_seed(0)
    first = Trainer(GPT(tiny_config), char_tokenizer, *splits, config, tmp_path / "b", progress=False)
    assert [h["step"] for h in first.run(until=15).history] == [0, 10]  # saved at 15, not evaluated
    second = Trainer(GPT(tiny_config), char_tokenizer, *splits, config, tmp_path / "b", progress=False)
    second.resume(tmp_path / "b" / "ckpt.pt")
    assert second.result.step == 15
    resumed = second.run()
    assert resumed.history == whole.history and resumed.train_losses == whole.train_losses


def test_resume_with_dropout_is_exact(tmp_path, char_tokenizer, splits, tiny_config):
    tiny_config.dropout = 0.2
    config = small_train_config(max_iters=20, eval_interval=10)
    torch.manual_seed(0)
    whole = Trainer(GPT(tiny_config), char_tokenizer, *splits, config, tmp_path / "a", progress=False).run()
    torch.manual_seed(0)
    Trainer(GPT(tiny_config), char_tokenizer, *splits, config, tmp_path / "b", progress=False).run(until=10)
    second = Trainer(GPT(tiny_config), char_tokenizer, *splits, config, tmp_path / "b", progress=False)
    second.resume(tmp_path / "b" / "ckpt.pt")
    assert second.run().train_losses == whole.train_losses


def test_resume_refuses_another_model(tmp_path, tiny_config, char_tokenizer, splits):
    config = small_train_config(max_iters=10)
    Trainer(GPT(tiny_config), char_tokenizer, *splits, config, tmp_path, progress=False).run()
    tiny_config.d_model = 64
    other = Trainer(GPT(tiny_config), char_tokenizer, *splits, config, None, progress=False)
    with pytest.raises(CheckpointError, match="differs from this model"):
        other.resume(tmp_path / "ckpt.pt")


def test_resume_missing_file(tiny_model, char_tokenizer, splits, tmp_path):
    trainer = Trainer(tiny_model, char_tokenizer, *splits, small_train_config(), None, progress=False)
    with pytest.raises(CheckpointError, match="no such file"):
        trainer.resume(tmp_path / "missing.pt")


def test_best_checkpoint_holds_lowest_val(tmp_path, tiny_model, char_tokenizer, splits):
    result = train(tiny_model, char_tokenizer, *splits, small_train_config(), tmp_path, progress=False)
    best = load_checkpoint(tmp_path / "best.pt").train_state
    assert best["history"][-1]["val"] == min(h["val"] for h in result.history[1:])


def test_split_shorter_than_context_is_refused(tiny_model, char_tokenizer, splits):
    with pytest.raises(ValueError, match="validation split has 10 tokens"):
        Trainer(tiny_model, char_tokenizer, splits[0], splits[1][:10], small_train_config(), progress=False)


def test_device_choice():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
