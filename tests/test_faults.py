"""Fault injection: a process that saves checkpoints in a loop is killed (SIGKILL) at random points.

After every kill the checkpoint on disk must load and be one complete save (its weights and its
training state from the same save, never a mix or a half), and the temporary files that a kill in
the middle of a save leaves behind must be exactly what `minigpt.runfolder.remove_stale_temp_files` removes.
"""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from minigpt import GPT, CharTokenizer, GPTConfig
from minigpt.checkpoint import load_checkpoint, save_checkpoint
from minigpt.runfolder import remove_stale_temp_files

CONFIG = dict(context_length=64, d_model=128, num_heads=4, num_blocks=4)  # about 3 MB a save

# Resumes from the checkpoint like a training run, then saves over and over: save number n holds
# weights all equal to n and train_state step n, so a mixed or half-written file would show. The
# disk is made slow (each file fills in eight writes, 20 ms apart). The saver says "writing" after
# the first write of a file and "saved" after each save, so that the test can aim a kill at the
# middle of writing a file, or kill at a random time once a save went through.
SAVER = textwrap.dedent("""
    import io
    import sys
    import time
    import torch
    from minigpt.checkpoint import load_checkpoint, save_checkpoint

    real_save = torch.save
    def slow_disk_save(obj, f):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        for i in range(8):
            f.write(data[i * len(data) // 8:(i + 1) * len(data) // 8])
            f.flush()
            if i == 0:
                print("writing", flush=True)
            time.sleep(0.02)
    torch.save = slow_disk_save

    path = sys.argv[1]
    ckpt = load_checkpoint(path)
    model, tokenizer, step = ckpt.model, ckpt.tokenizer, ckpt.train_state["step"]
    print("ready", flush=True)
    while True:
        step += 1
        with torch.no_grad():
            for param in model.parameters():
                param.fill_(step)
        save_checkpoint(path, model, tokenizer, train_state={"step": step})
        print("saved", flush=True)
""")


def _wait_for(saver: subprocess.Popen, line: str) -> None:
    """Read the saver's lines until `line`; fail with its error output if it ends first."""
    while (said := saver.stdout.readline()) != line + "\n":
        assert said, saver.communicate()[1]


def _assert_one_complete_save(path, at_least: int) -> int:
    ckpt = load_checkpoint(path)
    step = ckpt.train_state["step"]
    assert step >= at_least
    for name, param in ckpt.model.named_parameters():  # integers held exactly; 0.5 says which save
        assert torch.allclose(param, torch.full_like(param, float(step)), rtol=0, atol=0.5), name
    return step


@pytest.mark.timeout(180)
def test_kills_at_random_points_of_saving_never_lose_the_checkpoint(tmp_path):
    tokenizer = CharTokenizer.train("abcdefgh")
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, **CONFIG))
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(0.0)
    path = save_checkpoint(tmp_path / "ckpt.pt", model, tokenizer, train_state={"step": 0})
    rng = random.Random(20261125)  # the same delays every run
    step, leftovers = 0, 0
    for aimed in (False, True, False, True, False):
        saver = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        if aimed:  # a few ms after a file began to be written: in the middle of it
            _wait_for(saver, "writing")
            time.sleep(rng.uniform(0.0, 0.02))
        else:  # once a save went through, anywhere: computing, writing, renaming
            _wait_for(saver, "saved")
            time.sleep(rng.uniform(0.0, 0.3))
        saver.send_signal(signal.SIGKILL)
        saver.communicate()
        assert saver.returncode == -signal.SIGKILL

        temporary = sorted(p for p in tmp_path.iterdir() if p.name != "ckpt.pt")
        assert all(p.name.startswith(".ckpt.pt.") and p.name.endswith(".tmp") for p in temporary)
        step = _assert_one_complete_save(path, at_least=step)  # loads, with its leftovers there
        assert sorted(remove_stale_temp_files(tmp_path)) == temporary
        assert os.listdir(tmp_path) == ["ckpt.pt"]
        leftovers += len(temporary)
    assert step >= 3  # each saver not aimed at its first save got through one at least
    assert leftovers >= 2  # the aimed kills landed in the middle of a save
