import math

import numpy as np
import pytest
import torch

from minigpt import bits_per_byte, bits_per_char, perplexity
from minigpt.evaluate import evaluate_split


def test_perplexity_of_uniform_guess_is_vocab_size():
    assert perplexity(math.log(65)) == pytest.approx(65)


def test_bits_per_char_compares_tokenizers_fairly():
    # Same text (100 chars), same total information (100 * ln 2 nats = 100 bits), two tokenizations.
    assert bits_per_char(math.log(2), num_tokens=100, num_chars=100) == pytest.approx(1.0)
    assert bits_per_char(4 * math.log(2), num_tokens=25, num_chars=100) == pytest.approx(1.0)
    assert bits_per_byte(math.log(2), 10, 20) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="num_chars"):
        bits_per_char(1.0, 10, 0)


def _brute_force_loss(model, data, context_length):
    """Each target alone: the window it belongs to, from its start up to the target."""
    total = 0.0
    with torch.no_grad():
        for t in range(1, len(data)):
            start = (t - 1) // context_length * context_length
            logits, _ = model(data[start:t].view(1, -1))
            total -= torch.log_softmax(logits[0, -1].double(), dim=-1)[data[t]].item()
    return total / (len(data) - 1)


@pytest.mark.parametrize("length", [50, 49, 17, 2])  # a short last window; none; one window; one target
def test_evaluate_split_is_the_mean_over_every_target(tiny_model, splits, length):
    data = splits[1][:length]
    expected = _brute_force_loss(tiny_model, data, 16)
    for batch_size in (1, 2, 64):
        assert evaluate_split(tiny_model, data, 16, batch_size) == pytest.approx(expected, rel=1e-5)


def test_evaluate_split_restores_the_mode_and_refuses_bad_input(tiny_model, splits):
    tiny_model.train()
    evaluate_split(tiny_model, splits[1][:40], 16)
    assert tiny_model.training and all(p.grad is None for p in tiny_model.parameters())
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_split(tiny_model, splits[1], 16, 0)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        evaluate_split(tiny_model, splits[1][:1], 16)


# -- token shards: evaluate_split on a memmap, and `minigpt evaluate` on a run trained from shards ----

@pytest.mark.parametrize("length", [50, 49, 17, 2])
def test_evaluate_split_reads_a_memmap_as_it_reads_a_tensor(tiny_model, splits, length, tmp_path):
    data = splits[1][:length]
    path = tmp_path / "ids.bin"
    data.numpy().astype(np.uint16).tofile(path)
    mapped = np.memmap(path, dtype=np.uint16, mode="r", shape=(length,))
    for batch_size in (1, 2, 64):
        assert evaluate_split(tiny_model, mapped, 16, batch_size) == pytest.approx(
            evaluate_split(tiny_model, data, 16, batch_size), rel=1e-6)


def _report(capsys) -> dict[str, str]:
    """`minigpt evaluate`'s lines after the first, as {'loss': '2.3456', ...}."""
    return dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines()[1:])


@pytest.fixture(scope="module")
def shard_run(tmp_path_factory, corpus):
    """A tiny corpus prepared into shards, and a 4-step `minigpt train --data SHARDS` run on it."""
    from minigpt.cli import main

    root = tmp_path_factory.mktemp("shard_run")
    (root / "c.txt").write_text(corpus, encoding="utf-8")
    assert main(["prepare", str(root / "c.txt"), "--out", str(root / "sh"), "--no-progress"]) == 0
    assert main(["train", "--data", str(root / "sh"), "--out", str(root / "run"), "--max-iters", "4",
                 "--eval-interval", "2", "--context-length", "16", "--d-model", "16", "--num-heads", "2",
                 "--num-blocks", "1", "--batch-size", "2", "--eval-iters", "1", "--warmup-iters", "1",
                 "--sample-tokens", "0", "--no-progress", "--device", "cpu"]) == 0
    return root


def test_evaluate_on_shards_equals_the_loss_computed_directly(shard_run, capsys):
    from minigpt.checkpoint import load_checkpoint
    from minigpt.cli import main
    from minigpt.shards import TokenShards

    capsys.readouterr()
    ckpt = load_checkpoint(shard_run / "run" / "best.pt")
    assert ckpt.train_state["data"] == str(shard_run / "sh")  # the run remembers the folder
    shards = TokenShards.open(shard_run / "sh")
    ids = {s: torch.tensor(np.asarray(a).astype("int64")) for s, a in shards.splits.items()}
    direct = {s: evaluate_split(ckpt.model, ids[s], 16, 7) for s in ids}  # in memory, another batch size
    targets = {s: len(ids[s]) - 1 for s in ids}
    direct["all"] = sum(direct[s] * targets[s] for s in ids) / sum(targets.values())  # each in its windows
    for split, expected in direct.items():
        assert main(["evaluate", "--checkpoint", str(shard_run / "run" / "best.pt"), "--split", split]) == 0
        lines = _report(capsys)
        assert set(lines) == {"loss", "perplexity", "bits per token", "bits per character"}
        loss = float(lines["loss"])
        assert loss == pytest.approx(expected, abs=1e-4)  # printed with 4 decimals
        assert float(lines["perplexity"]) == pytest.approx(math.exp(loss), rel=1e-3)
        assert float(lines["bits per token"]) == pytest.approx(loss / math.log(2), rel=1e-3)
        assert lines["bits per character"] == f"{lines['bits per token']} (one character per token)"


def test_evaluate_refuses_shards_of_another_tokenizer_naming_data(shard_run, tmp_path, capsys):
    from minigpt.cli import main

    (tmp_path / "other.txt").write_text("abc\ncab\n" * 50, encoding="utf-8")
    other = str(tmp_path / "other")
    assert main(["prepare", str(tmp_path / "other.txt"), "--out", other, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(shard_run / "run" / "best.pt"), "--data", other]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and "another tokenizer (char, 4 ids)" in err
    assert "than the checkpoint's (char, " in err


def test_evaluate_names_data_when_the_shards_are_missing_or_not_shards(shard_run, tmp_path, capsys):
    from minigpt.cli import main

    best = str(shard_run / "run" / "best.pt")
    assert main(["evaluate", "--checkpoint", best, "--data", str(tmp_path / "gone")]) == 2
    err = capsys.readouterr().err
    assert "--data: no such file or folder" in err
    assert "a folder of token shards" in err and "a UTF-8 text file" in err
    assert main(["evaluate", "--checkpoint", best, "--data", str(tmp_path)]) == 2  # a folder without meta.json
    assert "is a folder without meta.json, so not token shards" in capsys.readouterr().err
    (shard_run / "sh").rename(shard_run / "moved")
    try:
        assert main(["evaluate", "--checkpoint", best]) == 2  # the folder the run remembers is gone
        err = capsys.readouterr().err
        assert "the checkpoint's data: no such file or folder" in err and "moved or deleted" in err
        assert "give --data" in err
        assert main(["evaluate", "--checkpoint", best, "--data", str(shard_run / "moved")]) == 0  # given
        assert "token shards" in capsys.readouterr().out
    finally:
        (shard_run / "moved").rename(shard_run / "sh")


def test_evaluate_shards_of_subword_tokens_says_why_there_are_no_bits_per_character(tmp_path, corpus):
    from minigpt import GPT, GPTConfig
    from minigpt.evaluate import evaluate_shards
    from minigpt.shards import prepare
    from minigpt.tokenizers import TiktokenTokenizer

    (tmp_path / "c.txt").write_text(corpus[:4000], encoding="utf-8")
    tokenizer = TiktokenTokenizer()
    prepare(tmp_path / "c.txt", tmp_path / "sh", tokenizer, progress=False)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=8, d_model=8, num_heads=1,
                          num_blocks=1))
    report = evaluate_shards(model, tokenizer, str(tmp_path / "sh"), "val", "cpu")
    lines = dict(line.split(": ", 1) for line in report[1:])
    assert float(lines["bits per token"]) == pytest.approx(float(lines["loss"]) / math.log(2), rel=1e-3)
    assert lines["bits per character"].startswith("not reported: the shards hold cl100k token ids")
