"""The optimizers: AdamW for every weight (the default), or Muon for the blocks' matrices.

AdamW scales each weight's step by its own running gradient size. Muon (torch.optim.Muon) treats a
weight matrix as a whole: it keeps a momentum of the gradient and replaces it by the nearest
orthogonal matrix (a few Newton-Schulz iterations), so every direction of the matrix moves by the
same amount. That suits the square-ish matrices inside the transformer blocks; the embeddings (a
lookup table, one row per token), the output layer and the 1-D gains and biases stay with AdamW.

With Muon there are two torch optimizers; `OptimizerChain` makes them look like one (param_groups,
state, step, zero_grad, state_dict), so the training loop and the checkpoints need not know.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from minigpt.config import TrainConfig
from minigpt.errors import MinigptError


class OptimizerChain:
    """Several optimizers over disjoint parameters, used as one.

    `state_dict()` has the layout of a single torch optimizer's: the groups of each optimizer one
    after the other, and parameters numbered on from where the previous optimizer stopped. So a
    checkpoint stores it, and checks it, like any other optimizer state.
    """

    def __init__(self, optimizers: Iterable[torch.optim.Optimizer]):
        self.optimizers = list(optimizers)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    @property
    def state(self) -> dict[torch.Tensor, dict[str, Any]]:
        return {param: values for opt in self.optimizers for param, values in opt.state.items()}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def state_dict(self) -> dict[str, Any]:
        state, groups, offset = {}, [], 0
        for opt in self.optimizers:
            part = opt.state_dict()
            state.update({index + offset: values for index, values in part["state"].items()})
            groups += [{**group, "params": [i + offset for i in group["params"]]}
                       for group in part["param_groups"]]
            offset += sum(len(group["params"]) for group in opt.param_groups)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Split a `state_dict()` back into the optimizers; a layout that does not fit is a
        ValueError (e.g. a checkpoint saved with another optimizer)."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise MinigptError(f"the saved optimizer has {len(groups)} parameter groups, this one "
                             f"{len(self.param_groups)}")
        offset = 0
        for opt in self.optimizers:
            mine, groups = groups[:len(opt.param_groups)], groups[len(opt.param_groups):]
            count = sum(len(group["params"]) for group in opt.param_groups)
            part_groups = [{**group, "params": [i - offset for i in group["params"]]}
                           for group in mine]
            part_state = {index - offset: values for index, values in state_dict["state"].items()
                          if offset <= index < offset + count}
            opt.load_state_dict({"state": part_state, "param_groups": part_groups})
            offset += count


def muon_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The 2-D weight matrices inside the transformer blocks: what Muon updates."""
    return [param for name, param in model.named_parameters()
            if name.startswith("blocks.") and param.dim() == 2 and param.requires_grad]


def configure_optimizer(model: nn.Module, config: TrainConfig, device: torch.device
                        ) -> torch.optim.Optimizer | OptimizerChain:
    """AdamW that decays only the weight matrices (biases, norms and embeddings keep their size).

    With `config.optimizer == "muon"`, the blocks' matrices go to Muon (peak rate muon_lr, the same
    weight decay) and AdamW keeps the rest; an untied output layer gets AdamW at head_lr when set.
    Each group's initial "lr" is its peak: the trainer scales it along the schedule.
    """
    fused = device.type in ("cuda", "cpu")  # one kernel for all parameters instead of a loop
    betas = (config.beta1, config.beta2)
    if config.optimizer == "adamw":
        return _adamw(model, config, [], fused, betas)
    if not hasattr(torch.optim, "Muon"):  # added in torch 2.9; pyproject allows older ones
        raise MinigptError(f"optimizer='muon' needs torch.optim.Muon (torch >= 2.9), and this is "
                         f"torch {torch.__version__}: use optimizer='adamw' or a newer torch")
    matrices = muon_parameters(model)
    muon = torch.optim.Muon(matrices, lr=config.muon_lr, weight_decay=config.weight_decay,
                            momentum=0.95, nesterov=True, ns_steps=5)
    return OptimizerChain([muon, _adamw(model, config, matrices, fused, betas)])


def _adamw(model: nn.Module, config: TrainConfig, taken: list[nn.Parameter], fused: bool,
           betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW over the parameters not in `taken`: decayed matrices, undecayed rest, and the
    untied output layer in a group of its own when head_lr is set."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    skip = {id(p) for p in taken}
    head = getattr(model, "lm_head", None)
    own_head = (config.head_lr is not None and head is not None
                and id(head.weight) not in embeddings)  # a tied head is the embedding
    if own_head:
        skip.add(id(head.weight))
    decay, no_decay = [], []
    for param in model.parameters():  # a tied weight appears once
        if not param.requires_grad or id(param) in skip:
            continue
        is_matrix = param.dim() >= 2 and id(param) not in embeddings
        (decay if is_matrix else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if own_head:
        groups.append({"params": [head.weight], "weight_decay": config.weight_decay,
                       "lr": config.head_lr})
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=betas, fused=fused)
