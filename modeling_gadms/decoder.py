"""The masked-token-prediction (MTP) decoder and the identity classifier (docs/method.md sections 2 and 5).

The decoder is used in training only: text token features of a masked caption (queries) attend to all image
token features (keys/values) through one cross-attention, then a small transformer and an MLM head predict
the masked tokens. Module names follow the released GA-DMS / IRRA checkpoints (`cross_attn`,
`cross_modal_transformer`, `ln_pre_t`, `ln_pre_i`, `ln_post`, `mlm_head.{dense,gelu,ln,fc}`), so converted
weights map one to one; the transformer layers are transformers' CLIP encoder layers.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPTextConfig
from transformers import initialization as init
from transformers.activations import QuickGELUActivation
from transformers.models.clip.modeling_clip import CLIPEncoder

from .losses import IGNORE_INDEX, mtp_loss


class GADMSMLMHead(nn.Module):
    """`Linear(d, d) -> QuickGELU -> LayerNorm -> Linear(d, vocab)`."""

    def __init__(self, width: int, vocab_size: int):
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.gelu = QuickGELUActivation()
        self.ln = nn.LayerNorm(width)
        self.fc = nn.Linear(width, vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.fc(self.ln(self.gelu(self.dense(hidden))))


class GADMSMTPDecoder(nn.Module):
    """Cross-modal decoder: cross-attention (text queries, image keys/values), transformer, layer norm, MLM head.

    Width is `config.projection_dim` (512), with `config.decoder_heads` heads and `config.decoder_layers`
    layers; the output is token logits over the text vocabulary.
    """

    def __init__(self, config):
        super().__init__()
        width, heads, layers = config.projection_dim, config.decoder_heads, config.decoder_layers
        self.width, self.num_layers = width, layers
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_pre_t = nn.LayerNorm(width)
        self.ln_pre_i = nn.LayerNorm(width)
        layer_config = CLIPTextConfig(
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
        )
        layer_config._attn_implementation = config.text_config._attn_implementation or "sdpa"
        self.cross_modal_transformer = CLIPEncoder(layer_config)  # bidirectional: called without a mask
        self.ln_post = nn.LayerNorm(width)
        self.mlm_head = GADMSMLMHead(width, config.text_config.vocab_size)

    def forward(
        self, text_tokens: torch.Tensor, image_tokens: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Token logits from projected text and image token features.

        Args:
            text_tokens: `(batch, text_positions, width)` projected text token features (queries).
            image_tokens: `(batch, image_positions, width)` projected image token features (keys and values).
            positions: optional `(batch, text_positions)` boolean mask. The transformer still sees every position;
                only the MLM head (whose vocabulary projection is most of the decoder's cost) is applied to the
                selected ones.

        Returns:
            `(batch, text_positions, vocab)` logits, or `(selected, vocab)` for the `True` entries of `positions`
            in row-major order (the order of `labels[positions]`).
        """
        image = self.ln_pre_i(image_tokens)
        hidden = self.cross_attn(self.ln_pre_t(text_tokens), image, image, need_weights=False)[0]
        hidden = self.ln_post(self.cross_modal_transformer(inputs_embeds=hidden).last_hidden_state)
        if positions is not None:
            hidden = hidden[positions]
        return self.mlm_head(hidden)

    def masked_token_loss(
        self, text_tokens: torch.Tensor, image_tokens: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """[`mtp_loss`] of the logits at the labelled positions of `labels` (`IGNORE_INDEX` elsewhere).

        Equal to `mtp_loss(self(text_tokens, image_tokens), labels)`, without the vocabulary logits of the
        positions that have no target.
        """
        labels = labels.to(text_tokens.device)
        targets = labels != IGNORE_INDEX
        return mtp_loss(self(text_tokens, image_tokens, positions=targets), labels[targets])

    def init_weights(self) -> None:
        """Initialise as docs/method.md section 2.4 says: attention in-projections std `d^-0.5`; output projections and the last
        MLP / head layers `d^-0.5 * (2L)^-0.5`; first MLP / head layers `(2d)^-0.5`; biases 0.

        Uses `transformers.initialization`, so weights loaded from a checkpoint are left alone.
        """
        attn_std = self.width**-0.5
        proj_std = attn_std * (2 * max(self.num_layers, 1)) ** -0.5
        fc_std = (2 * self.width) ** -0.5
        normal = [
            (self.cross_attn.in_proj_weight, attn_std),
            (self.cross_attn.out_proj.weight, proj_std),
            (self.mlm_head.dense.weight, fc_std),
            (self.mlm_head.fc.weight, proj_std),
        ]
        for layer in self.cross_modal_transformer.layers:
            attn, mlp = layer.self_attn, layer.mlp
            normal += [(attn.q_proj.weight, attn_std), (attn.k_proj.weight, attn_std), (attn.v_proj.weight, attn_std)]
            normal += [(attn.out_proj.weight, proj_std), (mlp.fc1.weight, fc_std), (mlp.fc2.weight, proj_std)]
        for weight, std in normal:
            init.normal_(weight, std=std)
        for name, param in self.named_parameters():
            if name.endswith("bias") and "ln" not in name and "layer_norm" not in name:
                init.zeros_(param)


__all__ = ["GADMSMLMHead", "GADMSMTPDecoder"]
