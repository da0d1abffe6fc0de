"""minigpt: the small GPT that the course builds, piece by piece, in the order the chapters teach.

    text -> tokenizers -> data (get_batch) -> attention -> model (GPT) -> evaluate -> checkpoint
         -> train -> sampling (generate) -> plotting, cli
"""

from minigpt.attention import KVCache, MultiHeadAttention, causal_mask, scaled_dot_product_attention
from minigpt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minigpt.config import GPTConfig, TrainConfig
from minigpt.data import encode_corpus, get_batch, load_text, shakespeare, train_val_split
from minigpt.evaluate import bits_per_byte, bits_per_char, estimate_loss, perplexity
from minigpt.model import GPT, Block, FeedForward
from minigpt.sampling import generate, sample_text
from minigpt.tokenizers import (BPETokenizer, CharTokenizer, TiktokenTokenizer, load_tokenizer,
                                train_tokenizer)
from minigpt.train import Trainer, learning_rate, resolve_device, train

__version__ = "0.1.0"

__all__ = [
    "BPETokenizer", "Block", "CharTokenizer", "CheckpointError", "FeedForward", "GPT", "GPTConfig",
    "KVCache", "MultiHeadAttention", "TiktokenTokenizer", "TrainConfig", "Trainer", "bits_per_byte",
    "bits_per_char", "causal_mask", "encode_corpus", "estimate_loss", "generate", "get_batch",
    "learning_rate", "load_checkpoint", "load_text", "load_tokenizer", "perplexity",
    "resolve_device", "sample_text", "save_checkpoint", "scaled_dot_product_attention",
    "shakespeare", "train", "train_tokenizer", "train_val_split",
]
