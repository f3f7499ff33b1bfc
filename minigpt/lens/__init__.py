"""The logit lens: decode the residual stream after every block into next-token predictions.

GPT-2 predicts with `softmax(ln_f(h_L) @ W_E^T)`. The lens applies a decoder to the stream `h_l`
after any block l, giving a distribution over the vocabulary for every row (layer) and position.

| module         | its one job                                                                         |
|----------------|-------------------------------------------------------------------------------------|
| `rows.py`      | `Row` (where a row sits: site and block), the rows of a lens, the positions rule   |
| `decoders.py`  | the `Decoder` protocol and the built-in decoders, as values                        |
| `residual.py`  | the residual stream at each row (`row_streams`, `residual_parts`)                  |
| `sequence.py`  | `logit_lens`: every statistic per row and position of one sequence                 |
| `result.py`    | `LensResult`, prediction depth, saving and loading                                 |
| `corpus.py`    | `evaluate_lens`: per-row means over a whole corpus, in bits; `CorpusResult`        |
| `jacobian.py`  | `JacobianLens`: one averaged Jacobian per layer, then ln_f (load, fit, save)         |
| `patchscope.py`| `Patchscope`: the model finishes a row's computation at a target prompt's last position|
| `generation.py`| `generate_lens`: the lens of each token as the model samples it; `GenerationLens`         |
| `_stream.py`   | the private streaming kernel both front ends run (one matmul per chunk of positions)|
| `_matmul.py`   | the precision knob, matmul= "exact", "onednn" or "bf16" (private)                  |

Memory: neither front end ever holds a (rows x positions x V) tensor (unless `keep_logits=True`).
"""

from .corpus import CorpusResult, evaluate_lens
from .generation import GenerationLens, generate_lens
from .jacobian import JacobianLens
from .patchscope import Patchscope
from .decoders import ALIASES, DECODERS, Decoder, DecoderSpec, LastBlocks, LnF, LnFNoBias, NormOnly, as_decoder, unembed
from ._matmul import MATMULS, Matmul, SlowMatmulWarning, cpu_capabilities
from .residual import ResidualParts, residual_parts, row_streams
from .result import METRICS, LensResult, Metric, prediction_depth
from .rows import SITES, Row, lens_rows, resolve_positions, row_labels
from .sequence import logit_lens

__all__ = [
    "logit_lens", "LensResult", "evaluate_lens", "CorpusResult",
    "Decoder", "DecoderSpec", "LnF", "LnFNoBias", "NormOnly", "LastBlocks", "as_decoder", "unembed", "DECODERS", "ALIASES",
    "JacobianLens", "Patchscope", "generate_lens", "GenerationLens",
    "Row", "SITES", "lens_rows", "row_labels", "resolve_positions", "prediction_depth",
    "ResidualParts", "residual_parts", "row_streams", "METRICS", "Metric",
    "MATMULS", "Matmul", "SlowMatmulWarning", "cpu_capabilities",
]  # fmt: skip
