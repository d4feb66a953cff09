"""The offline trainer: data preparation, fine-tuning, evaluation and the model artifact."""
