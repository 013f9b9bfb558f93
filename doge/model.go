package doge

import (
	"context"
	"fmt"
	"sync"

	"github.com/dmavk/dmavk/checkpoint"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/nn"
)

// Model is a Doge model on a device. It is safe for concurrent use by States of its own.
type Model struct {
	Cfg    checkpoint.Config
	DType  dma.DType // of the queries, keys and values DMA takes
	n      *nn.Device
	embed  *nn.Embedding
	layers []*layer
	norm   *nn.Vector
	lmHead *nn.Linear

	chunk int        // Options.PrefillChunk
	mu    sync.Mutex // Close against the States' checks
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
	// checkpoints), except the value projection and dt_proj: the dynamic weights that
	// choose the kept keys stay float32. Off, the model computes in float32 from the stored weights, as
	// transformers does with a checkpoint loaded in float32.
	Half bool
	// PrefillChunk is the rows of a prompt the linear layers, the MLP and each
	// attention call take at once (0: DefaultPrefillChunk; else a multiple of 16): it
	// bounds the prefill's scratch on long prompts.
	PrefillChunk int
}

// PrefillChunk is the rows a prefill takes at once (Options.PrefillChunk, or its default).
func (m *Model) PrefillChunk() int { return m.chunk }

// New uploads the model's weights from src, each in its dtype (float32, float16 or
// bfloat16); the model computes in float32.
func New(ctx context.Context, n *nn.Device, ck *checkpoint.Model, o Options) (*Model, error) {
	c := ck.Config
	if err := checkConfig(c); err != nil {
		return nil, err
	}
	w, err := ck.Doge()
	if err != nil {
		return nil, err
	}
	if o.PrefillChunk < 0 || o.PrefillChunk%16 != 0 {
		return nil, fmt.Errorf("doge: Options.PrefillChunk %d: 0 or a positive multiple of 16", o.PrefillChunk)
	}
	m := &Model{Cfg: *c, n: n, chunk: o.PrefillChunk}
	if m.chunk == 0 {
		m.chunk = DefaultPrefillChunk
	}
	fail := func(err error) (*Model, error) {
		m.Close()
		return nil, err
	}
	arrays := func(ts ...*checkpoint.Tensor) ([]*nn.Array, error) {
		out := make([]*nn.Array, len(ts))
		for i, t := range ts {
			var err error
			if out[i], err = arrayOf(t); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	top, err := arrays(w.Embed, w.LMHead, w.Norm)
	if err != nil {
		return fail(err)
	}
	if o.Half {
		m.DType = top[0].DType
	}
	if m.embed, err = n.NewEmbedding(ctx, top[0]); err != nil {
		return fail(err)
	}
	if m.lmHead, err = n.NewLinear(ctx, top[1], nil); err != nil {
		return fail(err)
	}
	if m.norm, err = n.NewVector(ctx, top[2]); err != nil {
		return fail(err)
	}
	acfg := nn.AttentionConfig{Hidden: c.HiddenSize, Heads: c.NumAttentionHeads, KVHeads: c.NumKeyValueHeads, HeadDim: c.HeadDim,
		Window: c.KeepWindowSize, Eps: float32(c.RMSNormEps), DType: m.DType}
	for i := range w.Layers {
		t := &w.Layers[i]
		l := &layer{}
		m.layers = append(m.layers, l)
		a, err := arrays(t.InputNorm, t.PostNorm, t.InputResidual, t.PostResidual,
			t.Q, t.K, t.V, t.O, t.DtProj, t.A, t.QNorm, t.KNorm, t.QBias, t.KBias, t.VBias, t.OBias, t.DtBias,
			t.Gate, t.Up, t.Down, t.GateBias, t.UpBias, t.DownBias, t.RouterGate, t.DownEmbed, t.UpEmbed)
		if err != nil {
			return fail(err)
		}
		for j, dst := range []**nn.Vector{&l.inNorm, &l.postNorm, &l.inRes, &l.postRes} {
			if *dst, err = n.NewVector(ctx, a[j]); err != nil {
				return fail(err)
			}
		}
		aw := &nn.AttentionWeights{Q: a[4], K: a[5], V: a[6], O: a[7], DtProj: a[8], A: a[9], QNorm: a[10], KNorm: a[11],
			QBias: a[12], KBias: a[13], VBias: a[14], OBias: a[15], DtBias: a[16]}
		if l.attn, err = n.NewAttention(ctx, acfg, aw); err != nil {
			return fail(err)
		}
		if l.mlp, err = n.NewGatedMLP(ctx, a[17], a[18], a[19], a[20], a[21], a[22]); err != nil {
			return fail(err)
		}
		if c.IsMoE {
			if l.experts, err = n.NewProductKeyExperts(ctx, a[23], a[24], a[25], c.NumExpertsPerTok, c.NormTopKProb); err != nil {
				return fail(err)
			}
		}
	}
	if o.Half {
		for _, l := range m.halfLinears() {
			l.HalfInputs = true
		}
	}
	return m, nil
}

// halfLinears are the linear layers that Half lets round their inputs.
func (m *Model) halfLinears() []*nn.Linear {
	out := []*nn.Linear{m.lmHead}
	for _, l := range m.layers {
		a := l.attn
		// Not V and dt_proj: the dynamic weights, which choose the kept keys, stay float32,
		// so half precision does not move a key across the selection's threshold.
		out = append(out, a.Q, a.K, a.O, l.mlp.Gate, l.mlp.Up, l.mlp.Down)
		if l.experts != nil {
			out = append(out, l.experts.Router)
		}
	}
	return out
}

// Device is the layer device the model runs on.
func (m *Model) Device() *nn.Device { return m.n }

// closed reports whether Close was called.
func (m *Model) closed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.layers == nil
}

// Close frees the weights (a State's calls fail after it; close the States too). It is
// safe to call more than once.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.embed != nil {
		m.embed.Close()
		m.embed = nil
	}
	if m.lmHead != nil {
		m.lmHead.Close()
		m.lmHead = nil
	}
	if m.norm != nil {
		m.norm.Close()
		m.norm = nil
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

// newRoPE is the model's rotary embedding (its own state: dynamic RoPE's frequencies).
func (m *Model) newRoPE() *nn.RoPE { return ropeOf(&m.Cfg) }

// Load opens the model directory dir (config.json, safetensors) and uploads the model;
// the files are closed once the weights are on the device.
func Load(ctx context.Context, n *nn.Device, dir string, o Options) (*Model, error) {
	ck, err := checkpoint.Open(dir)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	return New(ctx, n, ck, o)
}
