"""The reference CycleGAN training iteration, re-enacted for a same-run speed and memory baseline.

This mirrors ``optimize_parameters`` of junyanz/pytorch-CycleGAN-and-pix2pix
(models/cycle_gan_model.py) on the same networks (ResNet-9 generators with direct convolutions,
70x70 PatchGANs, instance norm), LSGAN, lambda 10, identity 0.5, image pools of 50: a forward of
all six generator calls, one backward of the summed generator loss with the discriminators frozen,
then both discriminators on pooled fakes, one optimiser step each. Only the timing harness is ours.
"""
from __future__ import annotations

import itertools

import torch
from torch.nn import functional as F

from translate.engine.replay import ReplayBuffer
from translate.nn import NLayerDiscriminator, ResnetGenerator, init_weights, set_winograd


class ReferenceCycleGAN:
    def __init__(self, lr: float = 2e-4) -> None:
        self.netG_A = set_winograd(init_weights(ResnetGenerator(n_blocks=9)), False)  # A -> B
        self.netG_B = set_winograd(init_weights(ResnetGenerator(n_blocks=9)), False)  # B -> A
        self.netD_A = init_weights(NLayerDiscriminator(3))  # judges B
        self.netD_B = init_weights(NLayerDiscriminator(3))  # judges A
        self.opt_G = torch.optim.Adam(itertools.chain(self.netG_A.parameters(), self.netG_B.parameters()),
                                      lr=lr, betas=(0.5, 0.999))
        self.opt_D = torch.optim.Adam(itertools.chain(self.netD_A.parameters(), self.netD_B.parameters()),
                                      lr=lr, betas=(0.5, 0.999))
        self.fake_A_pool, self.fake_B_pool = ReplayBuffer(50), ReplayBuffer(50)

    @staticmethod
    def _gan(pred: torch.Tensor, real: bool) -> torch.Tensor:
        return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))

    def _set_requires_grad(self, nets, flag: bool) -> None:
        for net in nets:
            for p in net.parameters():
                p.requires_grad = flag

    def _backward_D_basic(self, netD, real, fake) -> torch.Tensor:
        loss = (self._gan(netD(real), True) + self._gan(netD(fake.detach()), False)) * 0.5
        loss.backward()
        return loss

    def optimize_parameters(self, real_A: torch.Tensor, real_B: torch.Tensor) -> None:
        # forward()
        fake_B = self.netG_A(real_A)
        rec_A = self.netG_B(fake_B)
        fake_A = self.netG_B(real_B)
        rec_B = self.netG_A(fake_A)
        # G_A and G_B
        self._set_requires_grad([self.netD_A, self.netD_B], False)
        self.opt_G.zero_grad()
        idt_A = self.netG_A(real_B)
        idt_B = self.netG_B(real_A)
        loss_G = (self._gan(self.netD_A(fake_B), True) + self._gan(self.netD_B(fake_A), True)
                  + F.l1_loss(rec_A, real_A) * 10 + F.l1_loss(rec_B, real_B) * 10
                  + F.l1_loss(idt_A, real_B) * 10 * 0.5 + F.l1_loss(idt_B, real_A) * 10 * 0.5)
        loss_G.backward()
        self.opt_G.step()
        # D_A and D_B
        self._set_requires_grad([self.netD_A, self.netD_B], True)
        self.opt_D.zero_grad()
        self._backward_D_basic(self.netD_A, real_B, self.fake_B_pool(fake_B))
        self._backward_D_basic(self.netD_B, real_A, self.fake_A_pool(fake_A))
        self.opt_D.step()

    def modules(self):
        return [self.netG_A, self.netG_B, self.netD_A, self.netD_B]
