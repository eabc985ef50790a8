"""`adaptor-train finetune-cls`: a classification head (MLP or linear probe) on the frozen Adaptor."""

from training_cli.finetune_common import add_finetune_parser


def add_parser(sub) -> None:
    add_finetune_parser(
        sub,
        "finetune-cls",
        "fine-tune a classification head (MLP or linear probe) on the frozen Adaptor",
        "classification",
    )
