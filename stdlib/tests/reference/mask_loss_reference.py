"""Reference values for `stdlib/tests/mask_codec.rs`: the mask codec's reconstruction loss,
binary cross-entropy on logits plus soft Dice (MONAI's `DiceCELoss(sigmoid=True)` with its
defaults: Dice per sample and channel, smooth_nr = smooth_dr = 1e-5, averaged), and its
gradient with respect to the logits. torch 2.15, CPU, f64. Run: python3 mask_loss_reference.py
"""
import torch
import torch.nn.functional as F

logits = torch.tensor(
    [[[[2.0, -1.0], [0.5, -3.0]]], [[[-0.25, 1.5], [-2.0, 4.0]]]], dtype=torch.float64, requires_grad=True
)
# The second sample's mask is empty: the smoothing keeps its Dice finite.
target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]], dtype=torch.float64)
bce = F.binary_cross_entropy_with_logits(logits, target)
p = torch.sigmoid(logits).flatten(2)
t = target.flatten(2)
dice = (1 - (2 * (p * t).sum(2) + 1e-5) / (p.sum(2) + t.sum(2) + 1e-5)).mean()
total = bce + dice
total.backward()
print(repr(bce.item()), repr(dice.item()), repr(total.item()))
print(logits.grad.flatten().tolist())
