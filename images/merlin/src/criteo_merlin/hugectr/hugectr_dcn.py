"""The DCN as HugeCTR's layer graph, declared as data, then added to a `hugectr.Model`.

The declaration is plain Python (no hugectr import) so that its shapes, layer chain and parameter
counts are checked against the PyTorch DCN (criteo_merlin.train.dcn) wherever the tests run; only
`add_to` needs HugeCTR. It follows HugeCTR's samples/dcn/dcn_parquet.py (v25.03), with the
PyTorch model's concatenation order ([dense, embeddings] and [cross, deep]) so that the two
trainers build the same function:

    Input(label, dense[13], data1[26 slots, one key each])
    -> SparseEmbedding(DistributedSlotSparseEmbeddingHash, sum) -> Reshape(26 * E)
    -> Concat(dense, reshape) = x0
    -> MultiCross(x0, cross_layers)                (DCN v1: what hugectr2onnx converts)
    -> [InnerProduct -> ReLU -> Dropout] per MLP size (x0)
    -> Concat(cross, deep) -> InnerProduct(1) -> BinaryCrossEntropyLoss
"""
from __future__ import annotations

from dataclasses import dataclass, field

LABEL_TENSOR = "label"
DENSE_TENSOR = "dense"
SPARSE_TENSOR = "data1"        # hugectr2onnx names the ONNX key input after it
EMBEDDING_TENSOR = "sparse_embedding1"


@dataclass(frozen=True)
class Layer:
    kind: str                     # "Input", "SparseEmbedding" or a hugectr.Layer_t name
    bottom: tuple[str, ...]
    top: tuple[str, ...]
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DCNGraph:
    """The architecture both trainers share (criteo_merlin.train.dcn.DCNConfig's fields)."""

    slot_sizes: list[int]         # vocabulary per categorical column: HugeCTR's slot_size_array
    embedding_dim: int = 16
    cross_layers: int = 6
    mlp_dims: list[int] = field(default_factory=lambda: [1024, 1024])
    dropout: float = 0.5
    num_dense: int = 13

    @property
    def x0_width(self) -> int:
        return self.num_dense + len(self.slot_sizes) * self.embedding_dim

    def layers(self) -> list[Layer]:
        slots, emb = len(self.slot_sizes), self.embedding_dim
        out = [
            Layer("Input", (), (LABEL_TENSOR, DENSE_TENSOR, SPARSE_TENSOR),
                  {"label_dim": 1, "dense_dim": self.num_dense, "slots": slots}),
            Layer("SparseEmbedding", (SPARSE_TENSOR,), (EMBEDDING_TENSOR,),
                  {"embedding_vec_size": emb, "combiner": "sum", "vocabulary": int(sum(self.slot_sizes))}),
            Layer("Reshape", (EMBEDDING_TENSOR,), ("reshape1",), {"leading_dim": slots * emb}),
            Layer("Concat", (DENSE_TENSOR, "reshape1"), ("concat1",)),
        ]
        cross = "concat1"
        if self.cross_layers:
            out.append(Layer("MultiCross", ("concat1",), ("multicross1",), {"num_layers": self.cross_layers}))
            cross = "multicross1"
        deep = "concat1"
        for i, width in enumerate(self.mlp_dims, start=1):
            out += [Layer("InnerProduct", (deep,), (f"fc{i}",), {"num_output": width}),
                    Layer("ReLU", (f"fc{i}",), (f"relu{i}",)),
                    Layer("Dropout", (f"relu{i}",), (f"dropout{i}",), {"dropout_rate": self.dropout})]
            deep = f"dropout{i}"
        out += [Layer("Concat", (cross, deep), ("concat2",)),
                Layer("InnerProduct", ("concat2",), ("logit",), {"num_output": 1}),
                Layer("BinaryCrossEntropyLoss", ("logit", LABEL_TENSOR), ("loss",))]
        return out

    def widths(self) -> dict[str, int]:
        """Each tensor's width per sample (the embedding's: slots x embedding size, flattened)."""
        w: dict[str, int] = {}
        for layer in self.layers():
            p = layer.params
            if layer.kind == "Input":
                w.update({LABEL_TENSOR: p["label_dim"], DENSE_TENSOR: p["dense_dim"], SPARSE_TENSOR: p["slots"]})
            elif layer.kind == "SparseEmbedding":
                w[layer.top[0]] = w[layer.bottom[0]] * p["embedding_vec_size"]
            elif layer.kind == "Reshape":
                w[layer.top[0]] = p["leading_dim"]
            elif layer.kind == "Concat":
                w[layer.top[0]] = sum(w[b] for b in layer.bottom)
            elif layer.kind == "InnerProduct":
                w[layer.top[0]] = p["num_output"]
            elif layer.kind == "BinaryCrossEntropyLoss":
                w[layer.top[0]] = 1
            else:  # MultiCross, ReLU, Dropout keep their input's width
                w[layer.top[0]] = w[layer.bottom[0]]
        return w

    def parameters(self) -> dict[str, int]:
        """Trainable parameters per layer (by top tensor): what HugeCTR allocates for each."""
        w, out = self.widths(), {}
        for layer in self.layers():
            if layer.kind == "SparseEmbedding":
                out[layer.top[0]] = layer.params["vocabulary"] * layer.params["embedding_vec_size"]
            elif layer.kind == "InnerProduct":  # weight [in, out] + bias [out]
                out[layer.top[0]] = (w[layer.bottom[0]] + 1) * layer.params["num_output"]
            elif layer.kind == "MultiCross":    # per layer: weight [1, d] + bias [1, d]
                out[layer.top[0]] = layer.params["num_layers"] * 2 * w[layer.bottom[0]]
        return out

    def add_to(self, model, hugectr, optimizer, workspace_mb: int) -> None:
        """Add the layers to a `hugectr.Model` (before `compile()`)."""
        for layer in self.layers():
            p = layer.params
            if layer.kind == "Input":
                model.add(hugectr.Input(
                    label_dim=p["label_dim"], label_name=LABEL_TENSOR, dense_dim=p["dense_dim"],
                    dense_name=DENSE_TENSOR,
                    data_reader_sparse_param_array=[hugectr.DataReaderSparseParam(SPARSE_TENSOR, 1, True, p["slots"])]))
            elif layer.kind == "SparseEmbedding":
                model.add(hugectr.SparseEmbedding(
                    embedding_type=hugectr.Embedding_t.DistributedSlotSparseEmbeddingHash,
                    workspace_size_per_gpu_in_mb=workspace_mb, embedding_vec_size=p["embedding_vec_size"],
                    combiner=p["combiner"], sparse_embedding_name=layer.top[0], bottom_name=layer.bottom[0],
                    optimizer=optimizer))
            else:
                extra = {k: v for k, v in p.items()}
                model.add(hugectr.DenseLayer(layer_type=getattr(hugectr.Layer_t, layer.kind),
                                             bottom_names=list(layer.bottom), top_names=list(layer.top), **extra))


def workspace_mb(graph: DCNGraph, gpus: int, headroom: float = 2.0) -> int:
    """Embedding workspace per GPU: the table (keys, vectors and Adam's two moments) spread over the
    GPUs, with headroom for the hash table's load factor."""
    rows = sum(graph.slot_sizes)
    per_row = 8 + 4 * graph.embedding_dim * 3
    return max(16, int(rows * per_row * headroom / max(gpus, 1) / 2**20) + 1)
