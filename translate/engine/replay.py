"""Playing against the past: the replay buffer of past fakes (the CycleGAN image pool,
Shrivastava et al. 2017) and occasional swaps to past generator / discriminator snapshots."""
from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import torch
from torch import nn


class ReplayBuffer:
    """Shows the discriminator a mix of fresh fakes and fakes from earlier steps.

    Until full, every fake is stored and returned as is. Then each fake is, with probability
    ``p``, swapped for a random stored one (which it replaces), else returned as is. This keeps
    the discriminator from forgetting what older generators produced and damps oscillation.
    ``capacity = 0`` disables the buffer. Its random state is its own, so training resumes exactly.
    """

    def __init__(self, capacity: int = 50, p: float = 0.5, seed: int = 0) -> None:
        if capacity < 0 or not 0.0 <= p <= 1.0:
            raise ValueError("replay capacity must be >= 0 and p in [0, 1]")
        self.capacity = capacity
        self.p = p
        self.images: torch.Tensor | None = None  # (n, C, H, W), n <= capacity
        self.labels: torch.Tensor | None = None  # (n,) the stored fakes' classes (conditional models)
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return 0 if self.images is None else self.images.shape[0]

    @torch.no_grad()
    def __call__(self, fakes: torch.Tensor, labels: torch.Tensor | None = None):
        """The batch to show the discriminator. With ``labels`` (a class-conditional model) each
        stored fake keeps its label, and ``(images, labels)`` is returned."""
        if self.capacity == 0:
            return fakes if labels is None else (fakes, labels)
        fakes = fakes.detach()
        out, out_labels = [], []
        for k, img in enumerate(fakes):
            img = img.unsqueeze(0)
            lab = None if labels is None else labels[k: k + 1]
            n = len(self)
            if n < self.capacity:
                self.images = img.clone() if self.images is None else torch.cat([self.images, img])
                if lab is not None:
                    self.labels = lab.clone() if self.labels is None else torch.cat([self.labels, lab])
                out.append(img), out_labels.append(lab)
            elif torch.rand((), generator=self.generator).item() < self.p:
                i = int(torch.randint(self.capacity, (), generator=self.generator))
                out.append(self.images[i: i + 1].clone())
                self.images[i] = img[0]
                if lab is not None:
                    out_labels.append(self.labels[i: i + 1].clone())
                    self.labels[i] = lab[0]
            else:
                out.append(img), out_labels.append(lab)
        images = torch.cat(out)
        return images if labels is None else (images, torch.cat(out_labels))

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"rng": self.generator.get_state()}
        if self.images is not None:
            state["images"] = self.images.detach().cpu().clone()
        if self.labels is not None:
            state["labels"] = self.labels.detach().cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> None:
        self.generator.set_state(state["rng"])
        self.images = state["images"].to(device).clone() if "images" in state else None
        self.labels = state["labels"].to(device).clone() if "labels" in state else None


class PastSwaps:
    """Occasional swaps to past checkpoints of the networks (Salimans et al. 2016's "historical
    averaging" in its cheapest form; ganhacks trick 17): every ``every`` steps the current
    generators and discriminators are snapshotted, and one side, G or D chosen at random, is
    replaced by a random earlier snapshot for ``steps`` steps, during which it is frozen; then its
    own weights come back. The other side so trains, briefly, against an opponent it had already
    beaten, which breaks the cycles in which G and D chase each other, and pulls a generator out of
    a collapsed mode that the current D no longer punishes.

    Decisions depend only on (seed, step), and the snapshots go into checkpoints
    (:meth:`tensors`), so a resumed run swaps exactly as an uninterrupted one.
    """

    SIDES = {"G": "generators", "D": "discriminators"}

    def __init__(self, every: int, steps: int = 5, history: int = 4, seed: int = 0) -> None:
        self.every, self.steps, self.history, self.seed = every, steps, history, seed
        self.snapshots: list[tuple[int, dict[str, dict[str, torch.Tensor]]]] = []
        self.active: dict[str, Any] | None = None  # {"side", "until", "source"} while a swap runs
        self.stash: dict[str, torch.Tensor] | None = None  # the swapped-out side's own weights

    @staticmethod
    def _copy(net: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in net.state_dict().items()}

    def before_step(self, step: int, model: nn.Module) -> str | None:
        """Called before each step: ends or starts swaps. Returns the side frozen this step, if any."""
        if not self.every:
            return None
        if self.active is not None and step >= self.active["until"]:
            getattr(model, self.SIDES[self.active["side"]]).load_state_dict(self.stash)
            self.active, self.stash = None, None
        if self.active is None and step > 0 and step % self.every == 0:
            self.snapshots.append((step, {s: self._copy(getattr(model, a)) for s, a in self.SIDES.items()}))
            self.snapshots = self.snapshots[-self.history:]
            if len(self.snapshots) >= 2:
                rng = random.Random(self.seed * 1_000_003 + step)
                side = rng.choice(("G", "D"))
                source, weights = rng.choice(self.snapshots[:-1])
                nets = getattr(model, self.SIDES[side])
                self.stash = self._copy(nets)
                nets.load_state_dict(weights[side])
                self.active = {"side": side, "until": step + self.steps, "source": source}
        return None if self.active is None else self.active["side"]

    def real_weights(self, side: str) -> dict[str, torch.Tensor] | None:
        """While a swap of ``side`` runs, that side's own weights (a past snapshot is playing in
        its place); else None."""
        return self.stash if self.active is not None and self.active["side"] == side else None

    @contextlib.contextmanager
    def real(self, model: nn.Module, side: str) -> Iterator[None]:
        """Within the block, ``side``'s own weights are in place even while a swap runs (to judge
        or sample the real generators); the playing snapshot comes back after."""
        stash = self.real_weights(side)
        if stash is None:
            yield
            return
        nets = getattr(model, self.SIDES[side])
        playing = self._copy(nets)
        nets.load_state_dict(stash)
        try:
            yield
        finally:
            nets.load_state_dict(playing)

    def tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The snapshots and, while a swap runs, the weights playing in the swapped side's place
        (``swap.playing.*``): a checkpoint stores each network's own weights under its usual
        keys, whatever plays at the moment."""
        out = {}
        for i, (_, nets) in enumerate(self.snapshots):
            for side, weights in nets.items():
                out.update({f"swap.{i}.{side}.{k}": v for k, v in weights.items()})
        if self.active is not None:
            playing = getattr(model, self.SIDES[self.active["side"]]).state_dict()
            out.update({f"swap.playing.{k}": v for k, v in playing.items()})
        return out

    def own_weights(self) -> dict[str, torch.Tensor]:
        """The swapped side's own weights under the model's state-dict keys (empty when no swap runs)."""
        if self.active is None:
            return {}
        return {f"{self.SIDES[self.active['side']]}.{k}": v for k, v in self.stash.items()}

    def state(self) -> dict[str, Any]:
        return {"steps": [s for s, _ in self.snapshots], "active": dict(self.active) if self.active else None}

    def load(self, state: dict[str, Any] | None, tensors: dict[str, torch.Tensor], model: nn.Module,
             device: torch.device) -> None:
        """Restore the snapshots and a running swap; ``model`` holds the checkpoint's main weights."""
        state = state or {"steps": [], "active": None}
        self.snapshots = []
        for i, step in enumerate(state["steps"]):
            nets = {}
            for side in self.SIDES:
                prefix = f"swap.{i}.{side}."
                nets[side] = {k[len(prefix):]: v.to(device) for k, v in tensors.items() if k.startswith(prefix)}
            self.snapshots.append((int(step), nets))
        self.active = state["active"]
        self.stash = None
        if self.active is None:
            return
        nets = getattr(model, self.SIDES[self.active["side"]])
        playing = {k[len("swap.playing."):]: v for k, v in tensors.items() if k.startswith("swap.playing.")}
        if playing:  # the main weights are the side's own: stash them, put the playing snapshot in place
            self.stash = self._copy(nets)
            nets.load_state_dict(playing)
        else:  # a checkpoint from before swap.playing: its main weights were the playing ones
            self.stash = {k[len("swap.stash."):]: v.to(device) for k, v in tensors.items()
                          if k.startswith("swap.stash.")}
