"""Probe, not a library feature: the mean-scale model with its quantization grid following the mean.

    python benchmarks/codec_meangrid_probe.py LAMBDA     # -> /tmp/meangrid-LAMBDA (30 epochs, bf16)

y_hat = round(y - mu_q) + mu_q with mu_q the mean on the integer h_s's 1/8 grid (bin centres), the
rate of y + noise measured around mu_q, so the noisy rate bounds the coded one again. Only the run's
history.csv (validation loss, bpp and PSNR: the model's own estimate in eval mode) means anything:
the library's coder still codes round(y), so the run's test files and metrics.json do not.
Figures: benchmarks/results/design_notes.md, "Means and channel contexts".
"""
import sys, torch, aeopt
from aeopt.models.codec import model as M

PH = 8
def forward(self, x):
    y = self.analyse(x)
    z = self.hyper_analyse(y)
    z_tilde = M.quantize(z, "noise" if self.training else "round")
    params = self.hyper_params(z_tilde, torch.round(y).detach())
    m = y.shape[1]
    mu = params[:, m:].float()
    mu_q = (torch.floor(mu * PH) + 0.5) / PH
    mu_q = mu + (mu_q - mu).detach()  # straight-through: h_s still learns its means
    r = y - mu_q
    y_hat = mu_q + r + (torch.round(r) - r).detach()
    y_rate = (y + torch.empty_like(y).uniform_(-0.5, 0.5)) if self.training else y_hat
    lk = self.likelihoods(y_rate, z_tilde, torch.cat([params[:, :m], mu_q], 1))
    logits = self.decoder(y_hat)[..., :x.shape[-2], :x.shape[-1]]
    return {"x_hat": logits.clamp(0, 1), "logits": logits, "z": y, "likelihoods": lk}

M.CodecModel.forward = forward
lmbda = float(sys.argv[1])
aeopt.train(data="fashion-mnist", model="codec", entropy="meanscale", lmbda=lmbda, precision="bf16",
            latent_dim=16, width=32, hyper_width=16, epochs=30, batch_size=64, lr=1e-3, threads=1,
            out=f"/tmp/meangrid-{lmbda:g}", overwrite=True, progress=False, log=print)
