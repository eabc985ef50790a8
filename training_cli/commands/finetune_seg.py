"""`adaptor-train finetune-seg`: a segmentation decoder on the frozen Adaptor's patch tokens."""

from training_cli.finetune_common import add_finetune_parser


def add_parser(sub) -> None:
    add_finetune_parser(
        sub, "finetune-seg", "fine-tune a segmentation decoder on the frozen Adaptor's patch tokens", "segmentation"
    )
