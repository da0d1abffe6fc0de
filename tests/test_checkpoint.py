import os
import subprocess
import sys
import textwrap

import pytest
import torch

from minigpt import CharTokenizer
from minigpt.checkpoint import (CheckpointError, load_checkpoint, remove_stale_temp_files,
                                save_checkpoint)


def test_round_trip(tmp_path, tiny_model, char_tokenizer):
    optimizer = torch.optim.AdamW(tiny_model.parameters())
    path = save_checkpoint(tmp_path / "ckpt.pt", tiny_model, char_tokenizer, optimizer, {"step": 7})
    ckpt = load_checkpoint(path)
    assert ckpt.config == tiny_model.config
    assert ckpt.tokenizer.encode("ROMEO") == char_tokenizer.encode("ROMEO")
    assert ckpt.train_state == {"step": 7} and ckpt.optimizer_state is not None
    idx = torch.randint(tiny_model.config.vocab_size, (2, 16))
    assert torch.equal(ckpt.model(idx)[0], tiny_model(idx)[0])
    assert not ckpt.model.training
    assert ckpt.model.lm_head.weight is ckpt.model.token_embedding.weight


def test_save_leaves_no_temporary_files(tmp_path, tiny_model, char_tokenizer):
    save_checkpoint(tmp_path / "ckpt.pt", tiny_model, char_tokenizer)
    save_checkpoint(tmp_path / "ckpt.pt", tiny_model, char_tokenizer)
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_a_kill_during_save_leaves_the_previous_checkpoint_intact(tmp_path):
    """A process killed (SIGKILL) half way through writing must not damage the old checkpoint."""
    script = textwrap.dedent(f"""
        import os, signal, torch
        from minigpt import GPT, GPTConfig, CharTokenizer
        from minigpt.checkpoint import save_checkpoint
        tok = CharTokenizer.train("abcdef")
        model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=8, d_model=16, num_heads=2, num_blocks=1))
        save_checkpoint({str(tmp_path / 'ckpt.pt')!r}, model, tok, train_state={{"step": 1}})
        real_save = torch.save
        def dying_save(obj, f, *a, **k):
            f.write(b"PK\\x03\\x04 half a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
        save_checkpoint({str(tmp_path / 'ckpt.pt')!r}, model, tok, train_state={{"step": 2}})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    assert load_checkpoint(tmp_path / "ckpt.pt").train_state == {"step": 1}


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_a_checkpoint_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format_version": 1, "config": {}, "tokenizer": RunsCode(), "model": {}}, "evil.pt")
    with pytest.raises(CheckpointError, match="refused.*could run code"):
        load_checkpoint("evil.pt")
    assert not (tmp_path / "pwned.txt").exists()


def test_corrupt_and_truncated(tmp_path, tiny_model, char_tokenizer):
    good = save_checkpoint(tmp_path / "good.pt", tiny_model, char_tokenizer)
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pt").write_bytes(b"this is not a checkpoint at all")
    for name in ("truncated.pt", "garbage.pt"):
        with pytest.raises(CheckpointError, match="corrupt or truncated"):
            load_checkpoint(tmp_path / name)


def test_unknown_format_version(tmp_path, tiny_model, char_tokenizer):
    path = save_checkpoint(tmp_path / "ckpt.pt", tiny_model, char_tokenizer)
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="format_version=99.*reads format_version=1"):
        load_checkpoint(path)


def test_not_a_minigpt_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a minigpt checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_checkpoint_from_another_vocabulary(tmp_path, tiny_model, char_tokenizer):
    path = save_checkpoint(tmp_path / "ckpt.pt", tiny_model, char_tokenizer)
    payload = torch.load(path, weights_only=True)
    payload["tokenizer"] = CharTokenizer.train("abc").to_dict()
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="tokenizer of 3 tokens but a model for vocab_size"):
        load_checkpoint(path)
    payload["tokenizer"] = char_tokenizer.to_dict()
    payload["config"]["vocab_size"] = 99
    payload["tokenizer"] = CharTokenizer([chr(i) for i in range(99)]).to_dict()
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"token_embedding.weight has shape \(\d+, 32\) in the file"):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.pt")


def test_saved_file_follows_the_umask(tmp_path, tiny_model, char_tokenizer):
    """Not the private 0o600 of a temporary file: what any new file of this process would get."""
    from minigpt import checkpoint

    path = save_checkpoint(tmp_path / "ckpt.pt", tiny_model, char_tokenizer)
    assert path.stat().st_mode & 0o777 == 0o666 & ~checkpoint._UMASK


def test_remove_stale_temp_files_takes_only_our_leftovers(tmp_path, tiny_model, char_tokenizer):
    save_checkpoint(tmp_path / "ckpt.pt", tiny_model, char_tokenizer)
    stale = [tmp_path / ".ckpt.pt.k2_x9abq.tmp", tmp_path / ".best.pt.a1b2c3d4.tmp"]
    others = {".ckpt.pt.tmp": b"a", "ckpt.pt.abcdefgh.tmp": b"b", ".notes.txt": b"c",
              ".ckpt.pt.ABCDEFGH.tmp": b"d", ".ckpt.pt.abcdefgh.tmp.bak": b"e"}
    for path in stale:
        path.write_bytes(b"PK half a checkpoint")
    for name, data in others.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / ".x.pt.abcdefgh.tmp").mkdir()  # a folder of that name is not ours to remove
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".ckpt.pt.abcdefgh.tmp").write_bytes(b"elsewhere")

    assert sorted(remove_stale_temp_files(tmp_path)) == sorted(stale)
    assert not any(path.exists() for path in stale)
    assert all((tmp_path / name).read_bytes() == data for name, data in others.items())
    assert (tmp_path / "sub" / ".ckpt.pt.abcdefgh.tmp").exists()
    assert (tmp_path / ".x.pt.abcdefgh.tmp").is_dir()
    assert load_checkpoint(tmp_path / "ckpt.pt").config == tiny_model.config
    assert remove_stale_temp_files(tmp_path) == []
    assert remove_stale_temp_files(tmp_path / "not-there") == []
