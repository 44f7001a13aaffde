"""Diffusion family: a U-Net denoiser trained on a cosine or linear noise schedule, sampled with
DDIM, DDPM or DPM-Solver++ and classifier-free guidance, inverted with DDIM (family.py
implements it; schedule.py and sampling.py hold the mathematics, unet.py the network)."""

from aigc_cli.core.device import PRECISIONS
from aigc_cli.models.captions import TEXT_ENCODER
from aigc_cli.core.options import Option
from aigc_cli.models.registry import STEPS, FamilySpec, conditional_option, register_family, width_option

SAMPLERS = ("ddim", "ddpm", "dpm++")
LAYOUTS = ("compact", "ddpm")
SCHEDULES = ("cosine", "linear")
PREDICTIONS = ("eps", "v", "x0")
WEIGHTINGS = ("min-snr", "none")
# Class-conditional runs: 1.5, where the distribution (an FID-style judge) beats the GAN's and the
# asked digit is drawn as often as a classifier reads real digits; 2 narrowed each class (FD 19
# against 8.5; docs/benchmarks/diffusion.md, "Defaults against distribution quality"). Captioned
# runs: 3, where colour and all-four agreement rose with guidance up to 5 and 3 is the middle
# (docs/benchmarks/text-to-image.md). An unconditional run has no guidance (1).
DEFAULT_GUIDANCE = 1.5
CAPTION_GUIDANCE = 3.0
# Captioned runs weigh every timestep alike: Min-SNR's weight, about the SNR at high noise (0.02 at
# t = 900), starves the steps where a prompt's layout is decided ("in the top left": once a blob
# shows, x_t says where it is, so only high noise teaches the words); with min-snr a caption's
# position word moved the U-Net's output 0.009 at t = 900 after 1,290 steps, with none 0.16 after
# 630 (docs/benchmarks/text-to-image.md).
DEFAULT_WEIGHTING, CAPTION_WEIGHTING = "min-snr", "none"

# Defaults follow the papers, each checked on MNIST against its alternatives (docs/benchmarks/diffusion.md).
SPEC = register_family(FamilySpec(
    name="diffusion",
    summary="Train a diffusion model: a U-Net denoiser, cosine or linear schedule, sampled with DDIM or DPM-Solver++.",
    implementation="aigc_cli.models.diffusion.family:DiffusionFamily",
    options=(
        width_option(32),
        Option("channel_mult", str, "1,2,2", "Channel multiplier per U-Net level, comma-separated "
               "(one level per entry; each but the last halves the resolution)."),
        Option("layout", str, "compact", "U-Net skips: compact (one per level) or ddpm (Ho et al., diffusers' "
               "UNet2DModel: one per block, a block more on the way up).", choices=LAYOUTS),
        Option("blocks", int, 1, "Residual blocks per U-Net level on the way down.", minimum=1),
        Option("schedule", str, "cosine", "Noise schedule over the 1,000 training timesteps.", choices=SCHEDULES),
        Option("prediction", str, "v", "What the network predicts: eps (the noise), v or x0 (the image).",
               choices=PREDICTIONS),
        Option("weighting", str, None, "Loss weight per timestep: none or min-snr (Min-SNR-5, Hang et al. 2023).",
               default_text=f"{DEFAULT_WEIGHTING}, {CAPTION_WEIGHTING} for captioned runs", choices=WEIGHTINGS),
        Option("lr", float, 5e-4, "AdamW learning rate.", above=0.0),
        conditional_option("Conditioned on the dataset's captions, else on its labels, with their dropout for "
                           "guidance.", "on captions when the dataset has them, else on labels when it has them"),
        TEXT_ENCODER,
        Option("cond_drop", float, 0.1, "Share of steps trained without the label or caption (classifier-free "
               "guidance).", minimum=0.0, below=1.0),
        Option("ema_decay", float, 0.999, "Decay of the weight average used for sampling.", minimum=0.0, below=1.0,
               cli=False),
        # diffusers' accelerate calls this mixed_precision (no|fp16|bf16); one string option here too.
        Option("precision", str, "auto", "Training arithmetic: fp32, bf16 or fp16 autocast (fp16 with loss "
               "scaling); auto: bf16 on CUDA where supported (else fp16) and on CPUs with AMX, fp32 elsewhere.",
               choices=PRECISIONS),
    ),
    conditions=("label", "prompt", "negative_prompt"),
    decode_options=(
        STEPS,
        Option("sampler", str, "dpm++", "ddim, ddpm (ancestral) or dpm++ (DPM-Solver++ 2M).", choices=SAMPLERS),
        Option("eta", float, 0.0, "DDIM noise: 0 deterministic, 1 like DDPM.", minimum=0.0, maximum=1.0),
        Option("guidance", float, None, "Classifier-free guidance scale (1: none).",
               default_text=f"{DEFAULT_GUIDANCE:g} for class-conditional runs, {CAPTION_GUIDANCE:g} for captioned runs, else 1", minimum=0.0),
    ),
    encoder="inversion",
    export_formats=("images", "fidelity", "denoiser", "text-encoder"),
    docs="docs/diffusion.md",
))
