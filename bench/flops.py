#!/usr/bin/env python3
"""Forward FLOPs per token of a model from its config.json (matmuls only, as 2*m*n*k).

Counts every linear a token passes through (attention projections, router, the top-k routed
experts, shared experts, dense MLPs, lm_head) plus the attention score and value products for
an average causal context of (T+1)/2 positions. Element-wise work is left out: the floor is
the GEMM time. Usage: flops.py CONFIG_JSON [WINDOW_TOKENS]
"""
import json
import sys


def flops_per_token(cfg, window):
    h = cfg["hidden_size"]
    layers = cfg["num_hidden_layers"]
    heads = cfg["num_attention_heads"]
    ctx = (window + 1) / 2  # mean causal context length
    total = 0.0
    deepseek = cfg.get("model_type") in ("deepseek_v3", "kimi_k2") or \
        "DeepseekV3ForCausalLM" in cfg.get("architectures", [])
    for layer in range(layers):
        if deepseek:
            qk = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
            q_lora = cfg.get("q_lora_rank") or 0
            attn = (h * q_lora + q_lora * heads * qk) if q_lora else h * heads * qk
            attn += h * (cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"])
            attn += cfg["kv_lora_rank"] * heads * (cfg["qk_nope_head_dim"] + cfg["v_head_dim"])
            attn += heads * cfg["v_head_dim"] * h
            attn += ctx * heads * (qk + cfg["v_head_dim"])
            moe = cfg.get("n_routed_experts") and layer >= cfg.get("first_k_dense_replace", 0) \
                and layer % cfg.get("moe_layer_freq", 1) == 0
            experts = cfg.get("n_routed_experts", 0)
            shared = cfg.get("n_shared_experts", 0) or 0
        else:
            d = cfg.get("head_dim") or h // heads
            kv = cfg.get("num_key_value_heads", heads)
            attn = h * heads * d + 2 * h * kv * d + heads * d * h
            attn += ctx * heads * 2 * d
            moe = cfg.get("num_experts", 0) > 0 and layer not in cfg.get("mlp_only_layers", []) \
                and (layer + 1) % cfg.get("decoder_sparse_step", 1) == 0
            experts = cfg.get("num_experts", 0)
            shared = 0
        if moe:
            inter = cfg["moe_intermediate_size"]
            mlp = h * experts + cfg["num_experts_per_tok"] * 3 * h * inter + shared * 3 * h * inter
        else:
            mlp = 3 * h * cfg["intermediate_size"]
        total += attn + mlp
    total += h * cfg["vocab_size"]  # lm_head
    return 2.0 * total


if __name__ == "__main__":
    cfg = json.load(open(sys.argv[1]))
    window = int(sys.argv[2]) if len(sys.argv) > 2 else 256
    print(f"{flops_per_token(cfg, window):.6g}")
