"""Replay buffer of past fakes: the CycleGAN image pool (Shrivastava et al. 2017)."""
from __future__ import annotations

import torch


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
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return 0 if self.images is None else self.images.shape[0]

    @torch.no_grad()
    def __call__(self, fakes: torch.Tensor) -> torch.Tensor:
        if self.capacity == 0:
            return fakes
        fakes = fakes.detach()
        out = []
        for img in fakes:
            img = img.unsqueeze(0)
            n = len(self)
            if n < self.capacity:
                self.images = img.clone() if self.images is None else torch.cat([self.images, img])
                out.append(img)
            elif torch.rand((), generator=self.generator).item() < self.p:
                i = int(torch.randint(self.capacity, (), generator=self.generator))
                out.append(self.images[i : i + 1].clone())
                self.images[i] = img[0]
            else:
                out.append(img)
        return torch.cat(out)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"rng": self.generator.get_state()}
        if self.images is not None:
            state["images"] = self.images.detach().cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> None:
        self.generator.set_state(state["rng"])
        self.images = state["images"].to(device).clone() if "images" in state else None
