"""Token shards (minigpt/shards.py): prepare streams text into uint16/uint32 files, TokenShards reads them back."""

import json

import numpy as np
import pytest
import torch

from minigpt.data import get_batch, train_val_split
from minigpt.errors import MinigptError
from minigpt.shards import TokenShards, file_sha256, memmap_batch, prepare, token_dtype
from minigpt.tokenizers import CharTokenizer, TiktokenTokenizer

TEXT = "".join(f"LINE {i}: the cat sat on the mat, and the dog by the log.\n" for i in range(400))


def ids_of(shards: TokenShards, split: str) -> list[int]:
    return np.asarray(shards.splits[split]).tolist()


def test_prepare_one_file_equals_encoding_the_whole_text(tmp_path):
    source = tmp_path / "corpus.txt"
    source.write_text(TEXT, encoding="utf-8")
    tok = CharTokenizer.train(TEXT)
    meta = prepare(source, tmp_path / "shards", tok, val_fraction=0.1, chunk_chars=500, progress=False)
    shards = TokenShards.open(tmp_path / "shards", verify=True)
    train, val = ids_of(shards, "train"), ids_of(shards, "val")
    assert train + val == tok.encode(TEXT)  # pieces of 500 characters change nothing for characters
    assert meta["dtype"] == "uint16" and shards.splits["train"].dtype == np.uint16
    assert meta["tokens"] == {"train": len(train), "val": len(val)}
    # The cut falls at the first line end past 90% of the bytes, as train_val_split cuts at 90% of the ids.
    assert abs(len(train) - 0.9 * len(TEXT)) <= len(TEXT.splitlines()[0])
    assert train[-1] == tok.encode("\n")[0]
    assert json.loads((tmp_path / "shards" / "meta.json").read_text())["sha256"]["val"] == \
        file_sha256(tmp_path / "shards" / "val.bin")
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["meta.json", "train.bin", "val.bin"]
    assert shards.tokenizer.to_dict() == tok.to_dict()


def test_pieces_do_not_change_the_ids(tmp_path):
    (tmp_path / "c.txt").write_text(TEXT, encoding="utf-8")
    tok = CharTokenizer.train(TEXT)
    small = prepare(tmp_path / "c.txt", tmp_path / "small", tok, chunk_chars=1, progress=False)
    large = prepare(tmp_path / "c.txt", tmp_path / "large", tok, chunk_chars=10**7, progress=False)
    assert small["sha256"] == large["sha256"] and small["tokens"] == large["tokens"]


def test_folder_in_path_order_hidden_files_skipped_and_uint32_for_large_vocabularies(tmp_path):
    folder = tmp_path / "texts"
    (folder / "b").mkdir(parents=True)
    parts = {"a.txt": "First file.\n" * 30, "b/c.txt": "Second one, in a folder.\n" * 30, "d.md": "Third\n" * 30}
    for name, text in parts.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / ".hidden.txt").write_text("never read\n", encoding="utf-8")
    tok = TiktokenTokenizer()  # 100,277 ids: more than uint16 holds
    meta = prepare(folder, tmp_path / "out", tok, val_fraction=0.2, progress=False)
    shards = TokenShards.open(tmp_path / "out")
    assert meta["dtype"] == "uint32" and meta["files"] == 3
    ids = ids_of(shards, "train") + ids_of(shards, "val")
    assert tok.decode(ids) == "".join(parts[name] for name in ["a.txt", "b/c.txt", "d.md"])


def test_token_dtype_edges():
    assert token_dtype(2**16) == np.uint16 and token_dtype(2**16 + 1) == np.uint32
    with pytest.raises(MinigptError, match="vocab_size"):
        token_dtype(0)


def test_batches_equal_get_batch_on_the_same_ids(tmp_path):
    (tmp_path / "c.txt").write_text(TEXT, encoding="utf-8")
    tok = CharTokenizer.train(TEXT)
    prepare(tmp_path / "c.txt", tmp_path / "s", tok, progress=False)
    shards = TokenShards.open(tmp_path / "s")
    assert isinstance(shards.splits["train"], np.memmap)
    in_memory = torch.tensor(ids_of(shards, "train"))
    x, y = shards.get_batch("train", 5, 16, torch.Generator().manual_seed(7))
    x2, y2 = get_batch(in_memory, 5, 16, torch.Generator().manual_seed(7))
    assert x.dtype == torch.long and x.shape == (5, 16)
    assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(x[:, 1:], y[:, :-1])
    with pytest.raises(MinigptError, match="split must be one of"):
        shards.get_batch("test", 1, 4)
    with pytest.raises(MinigptError, match="context_length"):
        memmap_batch(np.arange(5, dtype=np.uint16), 1, 5)


def test_bad_input_is_refused_by_name(tmp_path):
    tok = CharTokenizer.train(TEXT)
    (tmp_path / "c.txt").write_text(TEXT, encoding="utf-8")
    with pytest.raises(MinigptError, match="neither a file nor a folder"):
        prepare(tmp_path / "missing.txt", tmp_path / "o", tok)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MinigptError, match="holds no files"):
        prepare(tmp_path / "empty", tmp_path / "o", tok)
    with pytest.raises(MinigptError, match="val_fraction"):
        prepare(tmp_path / "c.txt", tmp_path / "o", tok, val_fraction=1.0)
    with pytest.raises(MinigptError, match="tokenizer must be"):
        prepare(tmp_path / "c.txt", tmp_path / "o", "char")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(MinigptError, match="not UTF-8"):
        prepare(tmp_path / "latin1.txt", tmp_path / "o2", tok)
    (tmp_path / "one_line.txt").write_text("a single line without a cut", encoding="utf-8")
    with pytest.raises(MinigptError, match="val split came out empty"):
        prepare(tmp_path / "one_line.txt", tmp_path / "o3", CharTokenizer.train("a single line without a cut"))
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(MinigptError, match="is a file; give a folder"):
        prepare(tmp_path / "c.txt", tmp_path / "a_file", tok)
    prepare(tmp_path / "c.txt", tmp_path / "done", tok, progress=False)
    with pytest.raises(MinigptError, match="already holds token shards"):
        prepare(tmp_path / "c.txt", tmp_path / "done", tok)


def test_damaged_shards_are_refused(tmp_path):
    tok = CharTokenizer.train(TEXT)
    (tmp_path / "c.txt").write_text(TEXT, encoding="utf-8")
    prepare(tmp_path / "c.txt", tmp_path / "s", tok, progress=False)
    with pytest.raises(MinigptError, match="holds no meta.json"):
        TokenShards.open(tmp_path)
    data = bytearray((tmp_path / "s" / "val.bin").read_bytes())
    data[0] ^= 1  # one flipped bit: same size, another checksum
    (tmp_path / "s" / "val.bin").write_bytes(bytes(data))
    TokenShards.open(tmp_path / "s")  # the size check alone passes
    with pytest.raises(MinigptError, match="does not match its checksum"):
        TokenShards.open(tmp_path / "s", verify=True)
    (tmp_path / "s" / "train.bin").write_bytes((tmp_path / "s" / "train.bin").read_bytes()[:-2])
    with pytest.raises(MinigptError, match="train.bin should hold"):
        TokenShards.open(tmp_path / "s")
    (tmp_path / "s" / "meta.json").write_text('{"format": "other"}')
    with pytest.raises(MinigptError, match="not a minigpt token-shard"):
        TokenShards.open(tmp_path / "s")


def test_a_split_read_through_memmap_matches_train_val_split_for_characters(tmp_path):
    """For a character tokenizer the two splits are train_val_split's, up to the line the cut moves to."""
    (tmp_path / "c.txt").write_text(TEXT, encoding="utf-8")
    tok = CharTokenizer.train(TEXT)
    prepare(tmp_path / "c.txt", tmp_path / "s", tok, progress=False)
    shards = TokenShards.open(tmp_path / "s")
    train, _ = train_val_split(torch.tensor(tok.encode(TEXT)))
    n = len(train)
    assert ids_of(shards, "train")[:n] == train.tolist()


def test_tokenizer_for_streams_the_vocabulary(tmp_path):
    from minigpt.shards import tokenizer_for
    (tmp_path / "a.txt").write_text(TEXT[:500], encoding="utf-8")
    (tmp_path / "b.txt").write_text("Zebra quiz!\n", encoding="utf-8")
    assert tokenizer_for(tmp_path, "char").to_dict() == CharTokenizer.train(TEXT[:500] + "Zebra quiz!\n").to_dict()
    assert tokenizer_for(tmp_path, "cl100k").vocab_size > 2**16
    with pytest.raises(MinigptError, match="tokenizer must be one of"):
        tokenizer_for(tmp_path, "words")


def test_the_prepare_command(tmp_path):
    import subprocess
    import sys
    folder = tmp_path / "mine"
    folder.mkdir()
    for i in range(3):
        (folder / f"part{i}.txt").write_text(TEXT[i * 3000:(i + 1) * 3000], encoding="utf-8")
    command = [sys.executable, "-m", "minigpt", "prepare", str(folder), "--out", str(tmp_path / "shards")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "train and" in done.stdout and "from 3 file(s)" in done.stdout
    shards = TokenShards.open(tmp_path / "shards", verify=True)
    assert shards.tokenizer.decode(ids_of(shards, "train") + ids_of(shards, "val")) == TEXT[:9000]
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already holds token shards" in again.stderr


def test_training_on_shards_equals_training_on_the_same_ids_in_memory(tmp_path, tiny_config):
    from minigpt import GPT, TrainConfig, Trainer
    (tmp_path / "c.txt").write_text(TEXT, encoding="utf-8")
    tok = CharTokenizer.train(TEXT)
    prepare(tmp_path / "c.txt", tmp_path / "s", tok, progress=False)
    shards = TokenShards.open(tmp_path / "s")
    config = TrainConfig(batch_size=4, grad_accum_steps=2, max_iters=5, warmup_iters=1, eval_interval=5,
                         eval_iters=2, seed=3, device="cpu")
    weights = []
    for splits in ([shards.splits["train"], shards.splits["val"]],
                   [torch.tensor(ids_of(shards, s)) for s in ("train", "val")]):
        torch.manual_seed(0)
        model = GPT(tiny_config.__class__(**{**tiny_config.to_dict(), "vocab_size": tok.vocab_size}))
        result = Trainer(model, tok, *splits, config, progress=False).run()
        weights.append((model.state_dict(), result.history[-1]))
    (disk, disk_last), (memory, memory_last) = weights
    assert all(torch.equal(disk[name], memory[name]) for name in disk)  # the same batches, bit for bit
    assert disk_last == memory_last


def test_minigpt_train_reads_a_shard_folder_and_resumes_from_it(tmp_path):
    import subprocess
    import sys
    (tmp_path / "c.txt").write_text(TEXT * 3, encoding="utf-8")
    run = lambda *args: subprocess.run([sys.executable, "-m", "minigpt", *args], capture_output=True, text=True,
                                       timeout=180, cwd=tmp_path)
    assert run("prepare", "c.txt", "--out", "sh", "--no-progress").returncode == 0
    small = ["--context-length", "16", "--d-model", "16", "--num-heads", "2", "--num-blocks", "1",
             "--batch-size", "2", "--eval-iters", "1", "--warmup-iters", "1", "--sample-tokens", "5"]
    first = run("train", "--data", "sh", "--max-iters", "4", "--eval-interval", "2", "--out", "run", *small)
    assert first.returncode == 0, first.stderr
    assert "data: " in first.stdout and "train, " in first.stdout and (tmp_path / "run" / "ckpt.pt").exists()
    again = run("train", "--resume", "run/ckpt.pt", "--max-iters", "6")
    assert again.returncode == 0 and "done at step 6" in again.stdout, again.stderr
