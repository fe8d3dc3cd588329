"""The pretraining config (`tools/pretrain.py -c CONFIG`): every key, its type and default.

The shared sections come from ``ernie_tiny.schema``; this stage adds ``Mlm`` (the masking rule)
and changes two defaults: the output directory, and the tokenizer (built from the corpus, since
a model built from sizes has none).
"""
from __future__ import annotations

from pydantic import Field

from ernie_tiny.config import Section
from ernie_tiny.schema import (DataSection, GlobalSection, ModelSection, OptimizerSection, TokenizerSection,
                               TrainSection, check_model_fits)


class PretrainGlobal(GlobalSection):
    output_dir: str = "output/pretrain"


class PretrainTokenizer(TokenizerSection):
    source: str = Field("corpus", description="'corpus' (characters of the corpus), a PaddleNLP name or a directory")

    def check(self):
        yield from super().check()
        if self.source == "teacher":
            yield "source", ("'teacher' means nothing when pretraining: use 'corpus', a PaddleNLP name or a "
                             "directory (to continue pretraining a model, its own directory)")


class MlmSection(Section):
    """BERT's masking rule: choose ``mask_prob`` of the non-special tokens; of those, replace
    ``mask_token_prob`` with [MASK], ``random_token_prob`` with a random token, keep the rest."""

    mask_prob: float = Field(0.15, gt=0, lt=1, description="share of non-special tokens to predict")
    mask_token_prob: float = Field(0.8, ge=0, le=1, description="of the chosen tokens: replaced by [MASK]")
    random_token_prob: float = Field(0.1, ge=0, le=1, description="of the chosen tokens: replaced by a random token")

    def check(self):
        if self.mask_token_prob + self.random_token_prob > 1:
            yield "random_token_prob", (f"{self.random_token_prob} + mask_token_prob {self.mask_token_prob} "
                                        "is more than 1 (the rest of the chosen tokens are kept as they are)")


class PretrainConfig(Section):
    Global: PretrainGlobal = Field(default_factory=PretrainGlobal)
    Data: DataSection = Field(default_factory=DataSection)
    Tokenizer: PretrainTokenizer = Field(default_factory=PretrainTokenizer)
    Model: ModelSection = Field(default_factory=lambda: ModelSection(
        num_layers=6, hidden_size=384, num_heads=12, intermediate_size=1536, max_position_embeddings=512))
    Mlm: MlmSection = Field(default_factory=MlmSection)
    Optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    Train: TrainSection = Field(default_factory=TrainSection)

    def check(self):
        model = self.Model
        yield from check_model_fits(model.sizes(), "Model", self.Data.seq_len, "Data.seq_len",
                                    self.Tokenizer.directory_vocab_size(),
                                    "Model.name_or_path" if model.name_or_path else "Model.vocab_size")
        if model.name_or_path is not None and self.Tokenizer.source == "corpus":
            yield "Tokenizer.source", (
                f"'corpus' builds a new vocabulary, but Model.name_or_path {model.name_or_path!r} has its own: "
                "set Tokenizer.source to the model's name or directory")
