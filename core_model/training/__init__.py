"""Training loops (torch): Adaptor pretraining on cached features, downstream fine-tuning."""
