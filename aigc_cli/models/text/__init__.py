"""Text family: autoregressive language models over characters, bytes or BPE tokens, a GPT
(pre-LayerNorm decoder blocks; GPT-2's architecture when imported: hub/gpt2.py) or a GRU/LSTM, trained on a text corpus and sampled with temperature, top-k and
top-p (family.py implements it; nets.py holds the networks, sampling.py generation and scoring)."""

from aigc_cli.core.options import Option
from aigc_cli.models.registry import FamilySpec, register_family

ARCHS = ("gru", "lstm", "gpt")
TOKENIZERS = ("char", "byte", "bpe")
ACTIVATIONS = ("gelu", "gelu_tanh")  # the GPT's: exact GELU (aigc's own), GPT-2's tanh approximation
# --vocab-size's default: on the built-in corpus' training split (270k characters) 1024 tokens
# average 2.5 characters (a context of 64 tokens sees about 160 characters) and the median token
# occurs 58 times; at 4096 the median token occurs 5 times (3,092 tokens fewer than 10 times),
# too rarely to learn, and GPT-2's 50,257 would make the tied embedding (V x width) most of a
# small model's parameters (docs/text.md).
DEFAULT_BPE_VOCAB = 1024
TEXT_PRECISIONS = ("auto", "fp32", "bf16")  # no fp16: logits and attention scores outrun its range

# The GPT's sizes default to nanoGPT's character-level Shakespeare configuration for the CPU (4
# layers, 4 heads, width 128, context 64), the RNNs' to 2 x 256; gru is the default architecture
# because it learned the most per minute of the three (docs/benchmarks/text.md).
SPEC = register_family(FamilySpec(
    name="text",
    summary="Train a text model: a GRU, LSTM or small GPT over characters, bytes or BPE tokens.",
    implementation="aigc_cli.models.text.family:TextFamily",
    produces="text",
    options=(
        Option("arch", str, "gru", "gru, lstm or gpt (a decoder-only transformer). gru learns the most per minute "
               "on a CPU (docs/text.md).", choices=ARCHS),
        Option("tokenizer", str, "char", "char (the corpus' characters), byte (UTF-8 bytes: any text) or bpe "
               "(a byte-level BPE learnt from the training text: any text, fewer tokens).", choices=TOKENIZERS),
        Option("vocab_size", int, None, "Tokens of the BPE vocabulary (--tokenizer bpe only; fewer if the text "
               "runs out of pairs to merge).", default_text=str(DEFAULT_BPE_VOCAB), minimum=256),
        Option("layers", int, None, "Transformer blocks or recurrent layers.", default_text="4 for gpt, 2 for gru "
               "and lstm", minimum=1),
        Option("width", int, None, "Embedding and hidden width.", default_text="128 for gpt, 256 for gru and lstm",
               minimum=1),
        Option("heads", int, 4, "Attention heads (gpt; --width must be a multiple).", minimum=1),
        Option("context", int, 64, "Tokens the model sees at once (the GPT's window; the RNNs' training length).",
               minimum=2),
        Option("dropout", float, 0.0, "Dropout rate.", minimum=0.0, below=1.0),
        Option("lr", float, 2e-3, "Peak AdamW learning rate (a linear warm-up, then cosine decay to lr/10).",
               above=0.0),
        Option("warmup", int, 100, "Warm-up steps.", minimum=0),
        Option("weight_decay", float, 0.1, "AdamW weight decay (matrices and embeddings only).", minimum=0.0),
        Option("grad_clip", float, 1.0, "Clip the gradient's norm to this.", above=0.0),
        Option("ema_decay", float, 0.0, "Sample from a moving average of the weights with this decay (0: off).",
               minimum=0.0, below=1.0),
        Option("precision", str, "auto", "Training arithmetic: fp32 or bf16 autocast; auto: bf16 on CUDA GPUs "
               "that have it and on CPUs with AMX, fp32 elsewhere.", choices=TEXT_PRECISIONS),
    ),
    trains_on="text",
    conditions=("prompt",),
    decode_options=(
        Option("length", int, 500, "Tokens to generate per continuation.", minimum=1),
        Option("temperature", float, 0.8, "Sampling temperature (0: always the likeliest token).", minimum=0.0),
        Option("top_k", int, None, "Sample among the k likeliest tokens only.", default_text="all", minimum=1),
        Option("top_p", float, 1.0, "Sample from the smallest set of tokens holding this probability (nucleus).",
               above=0.0, maximum=1.0),
    ),
    export_formats=("logits",),
    docs="docs/text.md",
))
