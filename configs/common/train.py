"""Training loop settings (detectron2 ``train`` dict); facts from the DiffMatte release's training.

AMP fp16 autocast with a gradient scaler, DDP options, checkpoints kept 200, loss log every 10
iterations, image log every 2000, seed 8282 (Hu et al., ECCV 2024; YihanHu-2022/DiffMatte
``configs/common/train.py`` and its trainer). Iteration counts here are placeholders that make
this file usable on its own: every experiment config sets them from its epochs.
"""

from .sampler import sampler

# One nominal epoch of the Adobe training set: 431 foregrounds x 100 backgrounds = 43100
# composites. Experiment configs derive ITERS_PER_EPOCH = COMPOSITES_PER_EPOCH / batch / GPUs.
COMPOSITES_PER_EPOCH = 43100

train = dict(
    output_dir="./output",
    # Weights to start from: this model's, or a part of it (a converted backbone).
    init_checkpoint="",
    # With --resume: the training checkpoint to continue from; "": the newest in output_dir.
    resume_from="",
    max_iter=90000,
    amp=dict(enabled=True, precision="fp16"),
    ddp=dict(broadcast_buffers=True, find_unused_parameters=False, fp16_compression=True),
    checkpointer=dict(period=5000, max_to_keep=200),
    eval_period=5000,
    # Sampler of validation; the release's (DDPM, 1 step) unless overridden, e.g.
    # train.eval_sampler.method=ddim train.eval_sampler.steps=10.
    eval_sampler=sampler,
    # Max total gradient norm; None: no clipping, as released.
    grad_clip=None,
    log_period=10,
    image_log_period=2000,
    # First iteration of self-aligned training stage 1 / stage 2; None: never.
    self_align_stage1_step=None,
    self_align_stage2_step=None,
    seed=8282,
    device="cuda",
)
