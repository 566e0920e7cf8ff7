"""Data: task datasets and batches, masked-LM text, augmentation."""
