import math

import pytest
import torch

from minigpt import GPT, TrainConfig, Trainer, estimate_loss, learning_rate, train
from minigpt.checkpoint import CheckpointError, load_checkpoint
from minigpt.trainer import configure_optimizer, resolve_device


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
    with pytest.raises(ValueError, match=r"d_model must be 32, the checkpoint's \(a resume keeps the model "
                                         r"it continues\), got 64"):
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


# -- the modern options: the wsd schedule, Muon ---------------------------------------------------

def test_wsd_schedule_warms_up_holds_then_falls_in_a_straight_line():
    kw = dict(max_lr=1.0, min_lr=0.0, warmup_iters=10, max_iters=100, schedule="wsd",
              decay_fraction=0.4)
    assert learning_rate(0, **kw) == pytest.approx(0.1)
    assert [learning_rate(s, **kw) for s in (10, 35, 59)] == [1.0, 1.0, 1.0]  # flat until step 60
    assert learning_rate(60, **kw) == pytest.approx(1.0)
    assert learning_rate(70, **kw) == pytest.approx(0.75)
    assert learning_rate(80, **kw) == pytest.approx(0.5)  # a straight line: half way, half the rate
    assert learning_rate(100, **kw) == pytest.approx(0.0)
    # the decay never starts inside the warm-up: all decay means down from the end of warm-up
    assert learning_rate(10, **{**kw, "decay_fraction": 1.0}) == pytest.approx(1.0)
    assert learning_rate(55, **{**kw, "decay_fraction": 1.0}) == pytest.approx(0.5)


def test_group_peaks_follow_the_same_schedule_in_proportion(tiny_model, char_tokenizer, splits):
    config = small_train_config(optimizer="muon", muon_lr=0.02, learning_rate=1e-3, min_lr=1e-4)
    trainer = Trainer(tiny_model, char_tokenizer, *splits, config, progress=False)
    assert sorted({settings["lr"] for settings in trainer.group_settings}) == [1e-3, 0.02]
    for step in (0, 20, 39):
        adamw, muon = trainer._lr(step), trainer._lr(step, 0.02)
        assert muon == pytest.approx(20 * adamw, rel=1e-9)
    assert trainer._lr(40, 0.02) == pytest.approx(2e-3)  # min_lr scaled by 0.02 / 1e-3


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest(tiny_model):
    from minigpt.optim import OptimizerChain
    optimizer = configure_optimizer(tiny_model, TrainConfig(optimizer="muon", muon_lr=0.03),
                                    torch.device("cpu"))
    assert isinstance(optimizer, OptimizerChain)
    muon, adamw = optimizer.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    names = {id(p): n for n, p in tiny_model.named_parameters()}
    in_muon = [names[id(p)] for g in muon.param_groups for p in g["params"]]
    in_adamw = [names[id(p)] for g in adamw.param_groups for p in g["params"]]
    expected = [n for n, p in tiny_model.named_parameters() if n.startswith("blocks.") and p.dim() == 2]
    assert in_muon == expected and muon.param_groups[0]["lr"] == 0.03
    assert "token_embedding.weight" in in_adamw and "position_embedding.weight" in in_adamw
    assert not set(in_muon) & set(in_adamw)
    assert len(in_muon) + len(in_adamw) == len(list(tiny_model.parameters()))


def test_head_lr_gives_an_untied_output_layer_its_own_group(tiny_model):
    tied = configure_optimizer(tiny_model, TrainConfig(head_lr=0.5), torch.device("cpu"))
    assert len(tied.param_groups) == 2  # a tied head is the embedding: no group of its own
    tiny_model.lm_head.weight = torch.nn.Parameter(tiny_model.lm_head.weight.detach().clone())
    untied = configure_optimizer(tiny_model, TrainConfig(head_lr=0.5), torch.device("cpu"))
    head_group = untied.param_groups[-1]
    assert head_group["lr"] == 0.5 and head_group["params"] == [tiny_model.lm_head.weight]
    total = sum(p.numel() for g in untied.param_groups for p in g["params"])
    assert total == sum(p.numel() for p in tiny_model.parameters())


def test_optimizer_chain_state_dict_round_trip(tiny_model, char_tokenizer, splits):
    config = small_train_config(optimizer="muon", max_iters=3)
    trainer = Trainer(tiny_model, char_tokenizer, *splits, config, progress=False)
    trainer.run()
    state = trainer.optimizer.state_dict()
    # one optimizer's layout: parameters numbered 0..n-1 once across the groups
    indices = [i for g in state["param_groups"] for i in g["params"]]
    assert indices == list(range(len(list(tiny_model.parameters()))))
    assert set(state["state"]) <= set(indices)
    copy = configure_optimizer(tiny_model, config, torch.device("cpu"))
    copy.load_state_dict(state)
    again = copy.state_dict()
    for index, values in state["state"].items():
        for key, value in values.items():
            assert torch.equal(torch.as_tensor(again["state"][index][key]), torch.as_tensor(value))
    assert [len(g["params"]) for g in again["param_groups"]] == \
        [len(g["params"]) for g in state["param_groups"]]


def test_muon_loss_falls(tiny_model, char_tokenizer, splits):
    config = small_train_config(optimizer="muon", max_iters=60, schedule="wsd", learning_rate=1e-2,
                                min_lr=0.0, weight_decay=0.0)
    result = train(tiny_model, char_tokenizer, *splits, config, progress=False)
    assert result.history[-1]["train"] < result.history[0]["train"] - 0.8


def test_muon_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path, tiny_config,
                                                                   char_tokenizer, splits):
    config = small_train_config(max_iters=24, eval_interval=8, optimizer="muon", schedule="wsd")
    torch.manual_seed(0)
    whole = Trainer(GPT(tiny_config), char_tokenizer, *splits, config, tmp_path / "a", progress=False).run()
    torch.manual_seed(0)
    first = Trainer(GPT(tiny_config), char_tokenizer, *splits, config, tmp_path / "b", progress=False)
    first.run(until=13)  # off the evaluation schedule
    torch.manual_seed(123)
    second = Trainer(GPT(tiny_config), char_tokenizer, *splits, config, tmp_path / "b", progress=False)
    second.resume(tmp_path / "b" / "ckpt.pt")
    resumed = second.run()
    assert resumed.train_losses == pytest.approx(whole.train_losses, rel=1e-5, abs=1e-6)
    a = load_checkpoint(tmp_path / "a" / "ckpt.pt").model.state_dict()
    b = load_checkpoint(tmp_path / "b" / "ckpt.pt").model.state_dict()
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)
    # the momentum buffers came back too: without them the next steps would differ
    first_state = second.optimizer.optimizers[0].state
    assert first_state and all("momentum_buffer" in v for v in first_state.values())


def test_resume_from_a_checkpoint_saved_before_the_modern_options(tmp_path, tiny_config, char_tokenizer,
                                                                  splits):
    """A checkpoint written before chapter 8 has no position/norm/qk_norm/mlp/tie_weights: it is
    today's default model, and a resume continues it."""
    config = small_train_config(max_iters=8, eval_interval=4)
    Trainer(GPT(tiny_config), char_tokenizer, *splits, config, tmp_path, progress=False).run(until=4)
    payload = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    for name in ("position", "norm", "qk_norm", "mlp", "tie_weights"):
        del payload["config"][name]
    torch.save(payload, tmp_path / "ckpt.pt")
    trainer = Trainer(GPT(tiny_config), char_tokenizer, *splits, config, tmp_path, progress=False)
    trainer.resume(tmp_path / "ckpt.pt")
    assert trainer.run().step == 8


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_uses_the_weight_decay_and_betas_given_now(tmp_path, tiny_config, char_tokenizer, splits,
                                                          optimizer):
    """The saved optimizer state holds the old run's group settings; the options of the resume win
    (the saved train_config says so, so the optimizer must do it)."""
    Trainer(GPT(tiny_config), char_tokenizer, *splits, small_train_config(max_iters=4, optimizer=optimizer),
            tmp_path, progress=False).run()
    changed = small_train_config(max_iters=8, optimizer=optimizer, weight_decay=0.5, beta1=0.5)
    trainer = Trainer(GPT(tiny_config), char_tokenizer, *splits, changed, tmp_path, progress=False)
    trainer.resume(tmp_path / "ckpt.pt")
    groups = trainer.optimizer.param_groups
    assert [g["weight_decay"] for g in groups if g["weight_decay"]] == [0.5] * (1 + (optimizer == "muon"))
    assert all(g["betas"] == (0.5, 0.99) for g in groups if "betas" in g)
    assert trainer.run().step == 8


def test_a_non_finite_muon_momentum_stops_the_run_and_saves_nothing_more(tmp_path, tiny_config,
                                                                      char_tokenizer, splits):
    from minigpt.checkpoint import read_checkpoint
    from minigpt.trainer import NonFiniteError

    config = small_train_config(max_iters=20, eval_interval=5, optimizer="muon", checkpoint_interval=1)
    trainer = Trainer(GPT(tiny_config), char_tokenizer, *splits, config, tmp_path, progress=False)
    trainer.run(until=5)
    saved = (tmp_path / "ckpt.pt").read_bytes()
    muon = trainer.optimizer.optimizers[0]
    next(iter(muon.state.values()))["momentum_buffer"][0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"diverged at step \d+: .* muon_lr \(now 0.02\)"):
        trainer.run()
    assert (tmp_path / "ckpt.pt").read_bytes() == saved
    assert read_checkpoint(tmp_path / "ckpt.pt")["train_state"]["step"] == 5


def test_muon_on_a_torch_without_it_is_refused_by_name(tiny_model, monkeypatch):
    """pyproject allows torch >= 2.4; torch.optim.Muon arrived in 2.9."""
    monkeypatch.delattr(torch.optim, "Muon")
    with pytest.raises(ValueError, match=r"optimizer='muon' needs torch.optim.Muon \(torch >= 2.9\)"):
        configure_optimizer(tiny_model, small_train_config(optimizer="muon"), torch.device("cpu"))


# -- every resume rule: the same words through Trainer and through `minigpt train --resume` -------

@pytest.fixture(scope="module")
def untied_run(tmp_path_factory, corpus):
    """A finished 6-step `minigpt train` run of an untied model, trained without head_lr."""
    from minigpt.cli import main

    folder = tmp_path_factory.mktemp("rules")
    (folder / "corpus.txt").write_text(corpus, encoding="utf-8")
    assert main(["train", "--data", str(folder / "corpus.txt"), "--out", str(folder / "run"),
                 "--context-length", "16", "--d-model", "32", "--num-heads", "2", "--num-blocks", "1",
                 "--no-tie-weights", "--batch-size", "4", "--eval-iters", "1", "--max-iters", "6",
                 "--eval-interval", "3", "--sample-tokens", "0", "--device", "cpu",
                 "--no-progress"]) == 0
    return folder / "run" / "ckpt.pt"


def _trainer_message(path, model_changes: dict, train_changes: dict) -> str:
    from minigpt import GPTConfig, encode_corpus, load_text, train_val_split

    ckpt = load_checkpoint(path)
    state = ckpt.train_state
    splits = train_val_split(encode_corpus(load_text(state["data"]), ckpt.tokenizer))
    model = GPT(GPTConfig.from_dict({**ckpt.config.to_dict(), **model_changes}))
    config = TrainConfig.from_dict({**state["train_config"], **train_changes})
    with pytest.raises(ValueError) as error:
        Trainer(model, ckpt.tokenizer, *splits, config, progress=False).resume(path)
    return str(error.value)


def _command_message(capsys, path, args: list[str]) -> str:
    from minigpt.cli import main

    before = path.read_bytes()
    assert main(["train", "--resume", str(path), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minigpt: error: ") and err.count("\n") == 1 and path.read_bytes() == before
    return err.removeprefix("minigpt: error: ").rstrip("\n")


RESUME_RULES = [  # (setting, model changes, training changes, options of the command)
    ("d_model", {"d_model": 64}, {"max_iters": 9}, ["--d-model", "64", "--max-iters", "9"]),
    ("optimizer", {}, {"optimizer": "muon", "max_iters": 9}, ["--optimizer", "muon", "--max-iters", "9"]),
    ("head_lr", {}, {"head_lr": 0.01, "max_iters": 9}, ["--head-lr", "0.01", "--max-iters", "9"]),
    ("max_iters", {}, {"max_iters": 5}, ["--max-iters", "5"]),
]


@pytest.mark.parametrize("name, model_changes, train_changes, args", RESUME_RULES,
                         ids=[rule[0] for rule in RESUME_RULES])
@pytest.mark.parametrize("way", ["trainer", "command"])
def test_a_broken_resume_rule_gets_the_same_message_both_ways(untied_run, capsys, way, name,
                                                              model_changes, train_changes, args):
    expected = {"d_model": "d_model must be 32, the checkpoint's (a resume keeps the model it continues), got 64",
                "optimizer": "optimizer must be 'adamw', the checkpoint's (its state is what a resume continues; "
                             "start a new run for another optimizer), got 'muon'",
                "head_lr": "head_lr must be not set: the checkpoint was trained without it, so its optimizer has "
                           "no group of its own for the output layer to continue (start a new run to use it), "
                           "got 0.01",
                "max_iters": "max_iters must be above the checkpoint's step 6 (a resume trains further), got 5"}[name]
    if way == "trainer":
        assert _trainer_message(untied_run, model_changes, train_changes) == expected
    else:
        option = "--" + name.replace("_", "-")
        assert _command_message(capsys, untied_run, args) == expected.replace(name, option, 1)


@pytest.mark.parametrize("way", ["trainer", "command"])
def test_a_checkpoint_saved_for_sampling_only_is_refused_the_same_way(untied_run, tmp_path, capsys, way):
    from minigpt.checkpoint import save_checkpoint

    ckpt = load_checkpoint(untied_run)
    path = save_checkpoint(tmp_path / "sampling.pt", ckpt.model, ckpt.tokenizer, None, ckpt.train_state)
    expected = f"resume: {str(path)!r} has no optimizer or training state (it was saved for sampling only)"
    if way == "trainer":
        assert _trainer_message(path, {}, {"max_iters": 9}) == expected
    else:
        assert _command_message(capsys, path, ["--max-iters", "9"]) == expected


@pytest.mark.parametrize("way", ["trainer", "command"])
def test_head_lr_on_a_tied_output_layer_is_refused_the_same_way(tiny_model, char_tokenizer, splits, corpus,
                                                                tmp_path, capsys, way):
    """Not ignored in silence: a tied output layer is the embedding, with no rate of its own."""
    from minigpt.cli import main

    expected = ("head_lr must be not set for a tied output layer (it is the token embedding, trained at "
                "learning_rate; untie it with tie_weights=False, --no-tie-weights), got 0.01")
    if way == "trainer":
        with pytest.raises(ValueError) as error:
            Trainer(tiny_model, char_tokenizer, *splits, small_train_config(head_lr=0.01), progress=False)
        assert str(error.value) == expected
    else:
        assert main(["train", "--head-lr", "0.01", "--out", str(tmp_path / "run")]) == 2
        assert capsys.readouterr().err == f"minigpt: error: {expected.replace('head_lr', '--head-lr', 1)}\n"
        assert not (tmp_path / "run").exists()
