import base64
import os
import struct
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch

from minigpt import GPT, CharTokenizer, GPTConfig, TrainConfig
from minigpt.checkpoint import (FORMAT_VERSION, CheckpointError, load_checkpoint, read_checkpoint,
                                save_checkpoint)
from minigpt.runfolder import remove_stale_temp_files


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
    (tmp_path / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "truncated.pt")
    for name in ("garbage.pt", "picture.png"):  # not a checkpoint at all, not a damaged one
        with pytest.raises(CheckpointError, match=r"is not a minigpt checkpoint \(not a torch.save archive"):
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


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_saved_file_follows_the_umask(tmp_path, tiny_model, char_tokenizer, umask):
    """Not the private 0o600 of a temporary file: what any new file of this process would get
    (and importing minigpt changes no umask)."""
    previous = os.umask(umask)
    try:
        path = save_checkpoint(tmp_path / "ckpt.pt", tiny_model, char_tokenizer)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    code = "import os; m = os.umask(0o077); import minigpt.checkpoint; assert os.umask(m) == 0o077"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


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


# -- integrity, field checks, format versions, nothing non-finite -------------------------------

def _train_state() -> dict:
    """A training state shaped like the trainer's, with one extra key of the caller's."""
    return {"step": 20, "history": [{"step": 0, "train": 4.2, "val": 4.3, "lr": 0.0}],
            "train_losses": [4.2, 3.9], "scaler": {"scale": 1024.0, "_growth_tracker": 3},
            "train_config": TrainConfig().to_dict(), "data": "/abs/text.txt", "val_fraction": 0.1,
            "note": {"written by": ["a caller", 1]}}


@pytest.fixture(scope="module")
def full_checkpoint_bytes(tmp_path_factory, char_tokenizer) -> bytes:
    """A checkpoint with every field: model, tokenizer, optimizer with state, training state."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=char_tokenizer.vocab_size, context_length=16, d_model=32,
                          num_heads=4, num_blocks=2))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))[1].backward()
    optimizer.step()  # so the optimizer has per-parameter state
    path = tmp_path_factory.mktemp("full") / "ckpt.pt"
    return save_checkpoint(path, model, char_tokenizer, optimizer, _train_state()).read_bytes()


@pytest.fixture
def full_checkpoint(tmp_path, full_checkpoint_bytes):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(full_checkpoint_bytes)
    return path


def _rewrite(path, change) -> bytes:
    """Apply `change` to the checkpoint's payload, write it back; the new bytes."""
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)
    return path.read_bytes()


def _refused(path, message: str) -> None:
    """Loading fails with a CheckpointError matching `message`, and leaves the file as it was."""
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)
    assert path.read_bytes() == before


def test_full_round_trip_keeps_the_training_state(full_checkpoint, tiny_model):
    ckpt = load_checkpoint(full_checkpoint)
    state = ckpt.train_state
    assert state["step"] == 20 and state["history"] == _train_state()["history"]
    assert state["scaler"] == {"scale": 1024.0, "_growth_tracker": 3}
    assert state["note"] == {"written by": ["a caller", 1]}  # a caller's own keys are kept
    assert set(ckpt.optimizer_state["state"]) == set(range(len(list(tiny_model.parameters()))))
    payload = read_checkpoint(full_checkpoint)
    assert payload["format_version"] == FORMAT_VERSION == 2
    assert payload["written_by"].startswith("minigpt ")


@pytest.mark.parametrize("make_optimizer", [
    lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
    lambda params: torch.optim.SGD(params, lr=torch.tensor(0.1)),
    lambda params: torch.optim.RMSprop(params, lr=0.01, centered=True),
])
def test_other_optimizers_states_load(tmp_path, tiny_model, char_tokenizer, make_optimizer):
    optimizer = make_optimizer(tiny_model.parameters())
    idx = torch.zeros(1, 4, dtype=torch.long)
    tiny_model(idx, idx)[1].backward()
    optimizer.step()
    path = save_checkpoint(tmp_path / "ckpt.pt", tiny_model, char_tokenizer, optimizer)
    saved = load_checkpoint(path).optimizer_state
    make_optimizer(tiny_model.parameters()).load_state_dict(saved)  # what torch accepts passes
    lr = float(optimizer.param_groups[0]["lr"])
    assert float(saved["param_groups"][0]["lr"]) == pytest.approx(lr, rel=1e-6)


def _flip_a_byte_inside(path, entry_suffix: str) -> None:
    """Change one byte in the middle of a zip entry's data, leaving the archive's index alone."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(entry_suffix))
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26:
                                                          info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length
    data[start + info.file_size // 2] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("entry", ["/data/0", "/data.pkl"])
def test_a_tampered_zip_entry_is_refused_as_corrupt(full_checkpoint, entry):
    _flip_a_byte_inside(full_checkpoint, entry)
    if entry == "/data/0":  # torch alone does not notice: it would load other weights silently
        torch.load(full_checkpoint, weights_only=True)
    _refused(full_checkpoint, rf"is corrupt: the data of '.*{entry}' does not match its checksum")


def _set(path: str, value):
    """A change to the payload: set the item at `path` ('a/b/0') to `value`."""
    def change(payload):
        *parents, last = path.split("/")
        target = payload
        for key in parents:
            target = target[int(key) if isinstance(target, list) or key.isdigit() else key]
        target[int(last) if isinstance(target, list) or last.isdigit() else last] = value
    return change


def _delete(path: str):
    def change(payload):
        *parents, last = path.split("/")
        target = payload
        for key in parents:
            target = target[key]
        del target[last]
    return change


BAD_FIELDS = [
    (_set("written_by", 7), r"written_by must be a string, got 7"),
    (_delete("written_by"), r"it lacks \['written_by'\]"),
    (_delete("model"), r"it lacks \['model'\]"),
    (_set("train_state", None), r"train_state must be a dict with string keys, got None"),
    (_set("config", "big"), r"config: a GPTConfig needs a dict"),
    (_set("config/d_model", "32"), r"config: d_model must be a whole number"),
    (_set("config/bias", 1), r"config: bias must be True or False"),
    (_set("config/flash", True), r"config: unknown GPTConfig field"),
    (_set("tokenizer", {"kind": "bpe", "model": base64.b64encode(b"\x0a\x05hello").decode()}),
     r"tokenizer: model_proto is not a SentencePiece model"),
    (_set("tokenizer/chars", [1, 2]), r"tokenizer: .*'chars' must be a list of single characters"),
    (_set("tokenizer", None), r"tokenizer: tokenizer kind must be one of"),
    (_set("model", [1, 2]), r"model must be a dict of named tensors, got \[1, 2\]"),
    (_delete("model/ln_f.weight"), r"model weights do not match: missing \['ln_f.weight'\]"),
    (_set("model/ln_f.weight", [1.0] * 32), r"model\['ln_f.weight'\] must be a tensor of floating"),
    (_set("model/ln_f.weight", torch.ones(32, dtype=torch.long)),
     r"model\['ln_f.weight'\] must be a tensor of floating.*got a torch.int64 tensor"),
    (_set("model/ln_f.weight", torch.full((32,), float("nan"))),
     r"model\['ln_f.weight'\] holds NaN or infinite values"),
    (_set("optimizer", "adam"), r"optimizer must be None or a dict of 'state' and 'param_groups'"),
    (_set("optimizer/state", [1]), r"optimizer\['state'\] must be a dict of parameter index"),
    (_set("optimizer/state/0/exp_avg", "zeros"), r"optimizer\['state'\]\[0\]\['exp_avg'\] must be"),
    (_set("optimizer/state/0/exp_avg_sq", torch.full((3,), float("inf"))),
     r"optimizer\['state'\]\[0\]\['exp_avg_sq'\] holds NaN or infinite values"),
    (_set("optimizer/param_groups", {}), r"optimizer\['param_groups'\] must be a list of dicts"),
    (_set("optimizer/param_groups/0/lr", "0.1"), r"\['param_groups'\]\[0\]\['lr'\] must be a num"),
    (_set("optimizer/param_groups/0/params", ["w"]), r"\['param_groups'\] must be a list of dicts, each with a list"),
    (_set("train_state", [1]), r"train_state must be a dict with string keys"),
]


@pytest.mark.parametrize("change, message", BAD_FIELDS)
def test_every_field_is_checked_and_named(full_checkpoint, change, message):
    _rewrite(full_checkpoint, change)
    _refused(full_checkpoint, message)


def test_a_config_that_would_need_terabytes_is_refused_without_allocating(full_checkpoint):
    """The shapes are checked against the config on the 'meta' device, before any real model."""
    _rewrite(full_checkpoint, lambda payload: payload["config"].update(d_model=2**24))
    _refused(full_checkpoint, r"token_embedding.weight has shape \((\d+), 32\) in the file but "
                              r"\(\1, 16777216\) in the model its config describes")


def test_a_format_1_file_still_loads(tmp_path, tiny_model, char_tokenizer):
    """Built the way minigpt 0.1.0 wrote checkpoints; upgraded in memory, left as it is on disk."""
    optimizer = torch.optim.AdamW(tiny_model.parameters())
    old = {"format_version": 1, "config": tiny_model.config.to_dict(),
           "tokenizer": char_tokenizer.to_dict(),
           "model": {k: v.detach().cpu() for k, v in tiny_model.state_dict().items()},
           "optimizer": optimizer.state_dict(), "train_state": {"step": 3}}
    path = tmp_path / "old.pt"
    torch.save(old, path)
    before = path.read_bytes()
    payload = read_checkpoint(path)
    assert payload["format_version"] == 2 and payload["written_by"] == "minigpt 0.1.0 (format 1)"
    ckpt = load_checkpoint(path)
    idx = torch.randint(tiny_model.config.vocab_size, (2, 8))
    assert torch.equal(ckpt.model(idx)[0], tiny_model(idx)[0])
    assert ckpt.train_state == {"step": 3} and path.read_bytes() == before


@pytest.mark.parametrize("found, message", [
    (3, r"format_version=3 \(written by minigpt 9.0\); this minigpt reads format_version=1 to 2; "
        r"a newer minigpt wrote it: upgrade minigpt"),
    ("2", r"format_version='2'.*reads format_version=1 to 2$"),
    (True, r"format_version=True"), (0, r"format_version=0"),
])
def test_formats_this_minigpt_cannot_read(full_checkpoint, found, message):
    _rewrite(full_checkpoint, lambda p: p.update(format_version=found, written_by="minigpt 9.0"))
    _refused(full_checkpoint, message)


@pytest.mark.parametrize("where", ["weight", "optimizer"])
def test_non_finite_numbers_are_never_saved(tmp_path, tiny_model, char_tokenizer, where):
    optimizer = torch.optim.AdamW(tiny_model.parameters())
    path = save_checkpoint(tmp_path / "ckpt.pt", tiny_model, char_tokenizer, optimizer, {"step": 1})
    before = path.read_bytes()
    with torch.no_grad():
        if where == "weight":
            tiny_model.blocks[1].ffwd.up.weight[3, 4] = float("nan")
            message = r"model weight 'blocks.1.ffwd.up.weight' holds NaN or infinite values"
        else:
            optimizer.state[tiny_model.ln_f.bias]["exp_avg"] = torch.full((32,), float("inf"))
            message = r"optimizer state 'exp_avg' of 'ln_f.bias' holds NaN or infinite values"
    with pytest.raises(ValueError, match=message + r".*nothing was written to"):
        save_checkpoint(path, tiny_model, char_tokenizer, optimizer, {"step": 2})
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.pt"]


def test_a_training_state_that_would_not_load_is_not_saved(tmp_path, tiny_model, char_tokenizer):
    with pytest.raises(ValueError, match=r"save_checkpoint: train_state\['step'\] must be a number, a string"):
        save_checkpoint(tmp_path / "ckpt.pt", tiny_model, char_tokenizer, train_state={"step": object()})
    assert os.listdir(tmp_path) == []


def test_a_folder_or_a_device_is_named(tmp_path, tiny_model, char_tokenizer):
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file"):
        load_checkpoint(tmp_path)
    os.mkfifo(tmp_path / "pipe.pt")  # opening it to read would wait for a writer forever
    with pytest.raises(CheckpointError, match="'.*pipe.pt' is not a regular file"):
        load_checkpoint(tmp_path / "pipe.pt")
    with pytest.raises(ValueError, match=r"save_checkpoint: '.*' is a folder; give the path of a file"):
        save_checkpoint(tmp_path, tiny_model, char_tokenizer)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"save_checkpoint: '.*notes.txt' is a file, not a folder"):
        save_checkpoint(tmp_path / "notes.txt" / "ckpt.pt", tiny_model, char_tokenizer)
    assert (tmp_path / "notes.txt").read_text() == "mine"


# The training state's fields are its owner's to check (minigpt.train_state.TrainState): a file
# holding a bad one loads (for sampling) but does not resume.
BAD_TRAIN_STATE = [
    (_set("train_state/step", "20"), r"train_state\['step'\] must be a whole number >= 0, got '20'"),
    (_set("train_state/step", -1), r"train_state\['step'\] must be a whole number >= 0"),
    (_set("train_state/step", True), r"train_state\['step'\] must be a whole number >= 0"),
    (_set("train_state/history", [{"step": 0}]), r"train_state\['history'\] must be a list of"),
    (_set("train_state/history", [{"step": 0, "val": "low"}]), r"train_state\['history'\] must"),
    (_set("train_state/train_losses", [1.0, None]), r"train_state\['train_losses'\] must be a list"),
    (_set("train_state/scaler", [1024.0]), r"train_state\['scaler'\] must be a gradient scaler's state"),
    (_set("train_state/train_config", {"lr": 1}), r"holds a bad train_config: unknown TrainConfig field"),
    (_set("train_state/train_config/seed", [1]), r"holds a bad train_config: seed must be a whole number"),
]


@pytest.mark.parametrize("change, message", BAD_TRAIN_STATE)
def test_every_training_state_field_is_checked_by_its_owner(full_checkpoint, change, message):
    from minigpt.train_state import TrainState

    _rewrite(full_checkpoint, change)
    ckpt = load_checkpoint(full_checkpoint)  # plain data and tensors: a file like any other
    with pytest.raises(CheckpointError, match=message):
        TrainState.from_checkpoint(ckpt)
