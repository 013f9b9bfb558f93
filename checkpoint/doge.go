package checkpoint

import "fmt"

// Doge is the tensors of a DogeForCausalLM checkpoint, each checked for its dtype (F32,
// F16 or BF16) and its shape against the config. Linear weights are [out, in], as
// torch.nn.Linear stores them.
type Doge struct {
	Embed  *Tensor // model.embed_tokens.weight [vocab, hidden]
	LMHead *Tensor // lm_head.weight [vocab, hidden]; Embed itself when the embeddings are tied
	Norm   *Tensor // model.norm.weight [hidden]
	Layers []DogeLayer
}

// DogeLayer is one decoder layer. Biases are nil unless the config has attention_bias or
// mlp_bias; the CDMoE tensors are nil unless is_moe.
type DogeLayer struct {
	InputNorm     *Tensor // input_layernorm.weight [hidden]
	InputResidual *Tensor // input_residual [hidden]
	Q, K, V, O    *Tensor // self_attn.{q,k,v,o}_proj.weight: [H*hd, hidden], [Hkv*hd, hidden] (K, V), [hidden, H*hd]
	QNorm, KNorm  *Tensor // self_attn.{q,k}_norm.weight [hd]
	A             *Tensor // self_attn.A [Hkv]
	DtProj        *Tensor // self_attn.dt_proj.weight [Hkv, Hkv*hd]

	QBias, KBias, VBias, OBias, DtBias *Tensor // with attention_bias

	PostNorm     *Tensor // post_attention_layernorm.weight [hidden]
	PostResidual *Tensor // post_attention_residual [hidden]

	// DogeMLP, or CDMoE's shared expert: mlp.{gate,up}_proj.weight [inter, hidden],
	// mlp.down_proj.weight [hidden, inter].
	Gate, Up, Down             *Tensor
	GateBias, UpBias, DownBias *Tensor // with mlp_bias
	RouterGate                 *Tensor // mlp.router_gate.weight [2*NumKeys, hidden]
	DownEmbed, UpEmbed         *Tensor // mlp.{down,up}_embed.weight [experts, hidden]
}

// Doge checks and returns the model's tensors by their transformers names.
func (m *Model) Doge() (*Doge, error) {
	c := m.Config
	hid, hd, h, kv := c.HiddenSize, c.HeadDim, c.NumAttentionHeads, c.NumKeyValueHeads
	var err error
	w := func(name string, shape ...int) *Tensor {
		if err != nil {
			return nil
		}
		var t *Tensor
		t, err = m.Weight(name, shape...)
		return t
	}
	d := &Doge{
		Embed: w("model.embed_tokens.weight", c.VocabSize, hid),
		Norm:  w("model.norm.weight", hid),
	}
	if c.TieWordEmbeddings {
		d.LMHead = d.Embed
	} else {
		d.LMHead = w("lm_head.weight", c.VocabSize, hid)
	}
	for i := 0; i < c.NumHiddenLayers && err == nil; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		a := p + "self_attn."
		l := DogeLayer{
			InputNorm:     w(p+"input_layernorm.weight", hid),
			InputResidual: w(p+"input_residual", hid),
			Q:             w(a+"q_proj.weight", h*hd, hid),
			K:             w(a+"k_proj.weight", kv*hd, hid),
			V:             w(a+"v_proj.weight", kv*hd, hid),
			O:             w(a+"o_proj.weight", hid, h*hd),
			QNorm:         w(a+"q_norm.weight", hd),
			KNorm:         w(a+"k_norm.weight", hd),
			A:             w(a+"A", kv),
			DtProj:        w(a+"dt_proj.weight", kv, kv*hd),
			PostNorm:      w(p+"post_attention_layernorm.weight", hid),
			PostResidual:  w(p+"post_attention_residual", hid),
			Gate:          w(p+"mlp.gate_proj.weight", c.IntermediateSize, hid),
			Up:            w(p+"mlp.up_proj.weight", c.IntermediateSize, hid),
			Down:          w(p+"mlp.down_proj.weight", hid, c.IntermediateSize),
		}
		if c.AttentionBias {
			l.QBias, l.KBias, l.VBias = w(a+"q_proj.bias", h*hd), w(a+"k_proj.bias", kv*hd), w(a+"v_proj.bias", kv*hd)
			l.OBias, l.DtBias = w(a+"o_proj.bias", hid), w(a+"dt_proj.bias", kv)
		}
		if c.MLPBias {
			l.GateBias, l.UpBias = w(p+"mlp.gate_proj.bias", c.IntermediateSize), w(p+"mlp.up_proj.bias", c.IntermediateSize)
			l.DownBias = w(p+"mlp.down_proj.bias", hid)
		}
		if c.IsMoE {
			l.RouterGate = w(p+"mlp.router_gate.weight", 2*c.NumKeys(), hid)
			l.DownEmbed = w(p+"mlp.down_embed.weight", c.NumExperts, hid)
			l.UpEmbed = w(p+"mlp.up_embed.weight", c.NumExperts, hid)
		}
		d.Layers = append(d.Layers, l)
	}
	if err != nil {
		return nil, err
	}
	return d, nil
}
