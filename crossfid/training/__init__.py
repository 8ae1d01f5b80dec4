"""Fine-tuning CHGNet from database splits with the four transfer methods."""
