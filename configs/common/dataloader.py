"""Training data (DIM composition on the fly) and the validation folder.

Training set as in Xu et al., "Deep Image Matting" (CVPR 2017): the 431 Adobe foregrounds of the
DIM training split composited onto COCO train2014 backgrounds, with the GCA-Matting augmentation
chain (released ``configs/common/dataloader.py`` of YihanHu-2022/DiffMatte). Paths are relative
to the working directory; override them on the command line (see docs/config.md). The crop size
has no shared default: every experiment config states its own.
"""

from diffmatte.config import LazyCall as L
from diffmatte.data.composition1k import Composition1kDataset
from diffmatte.data.dim import DIMDataset
from diffmatte.data.loader import build_train_loader

dataloader = dict(
    train=L(build_train_loader)(
        dataset=L(DIMDataset)(
            foregrounds=[
                "data/Combined_Dataset/Training_set/Adobe-licensed images",
                "data/Combined_Dataset/Training_set/Other",
            ],
            backgrounds="data/coco/train2014",
            # Mandatory: each experiment config sets its crop (the release shared 1024 by mistake).
            crop_size="???",
            seed="${train.seed}",
        ),
        # Per process; the released runs used 2 or 4 GPUs (see each experiment config).
        batch_size=16,
        seed="${train.seed}",
        # start_iter (the iteration a resumed run starts at) is given when the loader is built.
        num_workers=4,
        pin_memory=True,
    ),
    # Composition-1k-style folder (merged/, trimaps/, alpha_copy/) for validation.
    test=L(Composition1kDataset)(
        root="data/Composition-1k-testset",
        image_dir="merged",
        trimap_dir="trimaps",
        alpha_dir="alpha_copy",
    ),
)
