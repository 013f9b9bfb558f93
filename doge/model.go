package doge

import (
	"context"
	"fmt"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/nn"
)

// Source gives a checkpoint's tensors by name (e.g. "model.layers.0.self_attn.A"); a
// missing tensor is an error that names it and where it was looked for.
type Source interface {
	Tensor(name string) (*nn.Array, error)
	Has(name string) bool
}

// Model is a Doge model on a device. It is safe for concurrent use by States of its own.
type Model struct {
	Cfg    Config
	DType  dma.DType // of the queries, keys and values DMA takes
	n      *nn.Device
	embed  *nn.Embedding
	layers []*layer
	norm   *nn.Vector
	lmHead *nn.Linear
}

type layer struct {
	inNorm, postNorm *nn.Vector
	inRes, postRes   *nn.Vector
	attn             *nn.Attention
	mlp              *nn.GatedMLP
	experts          *nn.ProductKeyExperts // is_moe
}

// Options tune a Model.
type Options struct {
	// Half computes at a float16 or bfloat16 checkpoint's precision where that is
	// faster: DMA takes queries, keys and values (and the KV cache keeps them) in the
	// checkpoint's dtype (half the cache memory; tensor-core attention), and the
	// products of many rows round their inputs to fp16 for tensor cores (fp16
	// checkpoints). Off, the model computes in float32 from the stored weights, as
	// transformers does with a checkpoint loaded in float32.
	Half bool
}

// New uploads the model's weights from src, each in its dtype (float32, float16 or
// bfloat16); the model computes in float32.
func New(ctx context.Context, n *nn.Device, cfg *Config, src Source, o Options) (*Model, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	m := &Model{Cfg: *cfg, n: n}
	fail := func(err error) (*Model, error) {
		m.Close()
		return nil, err
	}
	get := func(name string) (*nn.Array, error) {
		a, err := src.Tensor(name)
		if err != nil {
			return nil, err
		}
		if a.Name == "" {
			a.Name = name
		}
		return a, nil
	}
	opt := func(name string, on bool) (*nn.Array, error) {
		if !on {
			if src.Has(name) {
				return nil, fmt.Errorf("doge: tensor %s is in the checkpoint, but the config has no such bias", name)
			}
			return nil, nil
		}
		return get(name)
	}
	emb, err := src.Tensor("model.embed_tokens.weight")
	if err != nil {
		return fail(err)
	}
	if emb.Name == "" {
		emb.Name = "model.embed_tokens.weight"
	}
	if o.Half {
		m.DType = emb.DType
	}
	c := cfg
	if len(emb.Shape) != 2 || emb.Shape[0] != c.VocabSize || emb.Shape[1] != c.HiddenSize {
		return fail(fmt.Errorf("doge: tensor %s has shape %v, want [%d %d]", emb.Name, emb.Shape, c.VocabSize, c.HiddenSize))
	}
	if m.embed, err = n.NewEmbedding(ctx, emb); err != nil {
		return fail(err)
	}
	head := emb
	if !c.TieWordEmbeddings {
		if head, err = get("lm_head.weight"); err != nil {
			return fail(err)
		}
	}
	if m.lmHead, err = n.NewLinear(ctx, head, nil); err != nil {
		return fail(err)
	}
	if m.norm, err = vector(ctx, n, get, "model.norm.weight", c.HiddenSize); err != nil {
		return fail(err)
	}
	acfg := nn.AttentionConfig{Hidden: c.HiddenSize, Heads: c.NumAttentionHeads, KVHeads: c.NumKeyValueHeads, HeadDim: c.HeadDim,
		Window: c.KeepWindowSize, Eps: float32(c.RMSNormEps), DType: m.DType}
	for i := 0; i < c.NumHiddenLayers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		l := &layer{}
		m.layers = append(m.layers, l)
		for _, v := range []struct {
			dst  **nn.Vector
			name string
		}{{&l.inNorm, "input_layernorm.weight"}, {&l.postNorm, "post_attention_layernorm.weight"},
			{&l.inRes, "input_residual"}, {&l.postRes, "post_attention_residual"}} {
			if *v.dst, err = vector(ctx, n, get, p+v.name, c.HiddenSize); err != nil {
				return fail(err)
			}
		}
		var w nn.AttentionWeights
		a := p + "self_attn."
		for _, x := range []struct {
			dst  **nn.Array
			name string
			on   bool
		}{
			{&w.Q, "q_proj.weight", true}, {&w.K, "k_proj.weight", true}, {&w.V, "v_proj.weight", true}, {&w.O, "o_proj.weight", true},
			{&w.DtProj, "dt_proj.weight", true}, {&w.A, "A", true}, {&w.QNorm, "q_norm.weight", true}, {&w.KNorm, "k_norm.weight", true},
			{&w.QBias, "q_proj.bias", c.AttentionBias}, {&w.KBias, "k_proj.bias", c.AttentionBias}, {&w.VBias, "v_proj.bias", c.AttentionBias},
			{&w.OBias, "o_proj.bias", c.AttentionBias}, {&w.DtBias, "dt_proj.bias", c.AttentionBias},
		} {
			if *x.dst, err = opt(a+x.name, x.on); err != nil {
				return fail(err)
			}
		}
		if l.attn, err = n.NewAttention(ctx, acfg, &w); err != nil {
			return fail(err)
		}
		mp := p + "mlp."
		var mw [6]*nn.Array
		for j, name := range []string{"gate_proj.weight", "up_proj.weight", "down_proj.weight", "gate_proj.bias", "up_proj.bias", "down_proj.bias"} {
			if mw[j], err = opt(mp+name, j < 3 || c.MLPBias); err != nil {
				return fail(err)
			}
		}
		if err := checkShape(mw[0], c.IntermediateSize, c.HiddenSize); err != nil {
			return fail(err)
		}
		if l.mlp, err = n.NewGatedMLP(ctx, mw[0], mw[1], mw[2], mw[3], mw[4], mw[5]); err != nil {
			return fail(err)
		}
		if c.IsMoE {
			var router, down, up *nn.Array
			for _, x := range []struct {
				dst  **nn.Array
				name string
			}{{&router, "router_gate.weight"}, {&down, "down_embed.weight"}, {&up, "up_embed.weight"}} {
				if *x.dst, err = get(mp + x.name); err != nil {
					return fail(err)
				}
			}
			if err := checkShape(down, c.NumExperts, c.HiddenSize); err != nil {
				return fail(err)
			}
			if l.experts, err = n.NewProductKeyExperts(ctx, router, down, up, c.ExpertsPerTok, c.NormTopKProb); err != nil {
				return fail(err)
			}
		}
	}
	if o.Half {
		for _, l := range m.linears() {
			l.HalfInputs = true
		}
	}
	return m, nil
}

// linears are every linear layer of the model.
func (m *Model) linears() []*nn.Linear {
	out := []*nn.Linear{m.lmHead}
	for _, l := range m.layers {
		a := l.attn
		out = append(out, a.Q, a.K, a.V, a.O, a.DtProj, l.mlp.Gate, l.mlp.Up, l.mlp.Down)
		if l.experts != nil {
			out = append(out, l.experts.Router)
		}
	}
	return out
}

func checkShape(a *nn.Array, shape ...int) error {
	ok := len(a.Shape) == len(shape)
	for i := 0; ok && i < len(shape); i++ {
		ok = a.Shape[i] == shape[i]
	}
	if !ok {
		return fmt.Errorf("doge: tensor %s has shape %v, want %v", a.Name, a.Shape, shape)
	}
	return nil
}

func vector(ctx context.Context, n *nn.Device, get func(string) (*nn.Array, error), name string, size int) (*nn.Vector, error) {
	a, err := get(name)
	if err != nil {
		return nil, err
	}
	if err := checkShape(a, size); err != nil {
		return nil, err
	}
	return n.NewVector(ctx, a)
}

// Device is the layer device the model runs on.
func (m *Model) Device() *nn.Device { return m.n }

// Close frees the weights. States must be closed first.
func (m *Model) Close() error {
	if m.embed != nil {
		m.embed.Close()
	}
	if m.lmHead != nil {
		m.lmHead.Close()
	}
	if m.norm != nil {
		m.norm.Close()
	}
	for _, l := range m.layers {
		for _, v := range []*nn.Vector{l.inNorm, l.postNorm, l.inRes, l.postRes} {
			if v != nil {
				v.Close()
			}
		}
		if l.attn != nil {
			l.attn.Close()
		}
		if l.mlp != nil {
			l.mlp.Close()
		}
		if l.experts != nil {
			l.experts.Close()
		}
	}
	m.layers = nil
	return nil
}

// newRoPE is the model's rotary embedding.
func (m *Model) newRoPE() *nn.RoPE {
	s, _ := m.Cfg.RoPE() // checked by New
	return &nn.RoPE{Type: s.Type, Theta: s.Theta, HeadDim: m.Cfg.HeadDim, Factor: s.Factor, MaxPos: m.Cfg.MaxPositionEmbeddings,
		OrigMax: s.OrigMax, BetaFast: s.BetaFast, BetaSlow: s.BetaSlow, AttnScale: s.AttnFactor, Truncate: s.Truncate}
}
