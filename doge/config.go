package doge

import (
	"fmt"

	"github.com/dmavk/dmavk/checkpoint"
	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/nn"
)

// checkConfig reports what of a valid Doge config this package cannot run, naming the
// field.
func checkConfig(c *checkpoint.Config) error {
	bad := func(format string, a ...any) error { return fmt.Errorf("doge: config: "+format, a...) }
	switch {
	case c.HeadDim%8 != 0 || c.HeadDim > dma.MaxHeadDim:
		return bad("head_dim %d: DMA takes multiples of 8 up to %d", c.HeadDim, dma.MaxHeadDim)
	case c.HiddenSize%4 != 0:
		return bad("hidden_size %d must be a multiple of 4", c.HiddenSize)
	case c.HiddenAct != "silu":
		return bad("hidden_act %q: only silu is supported", c.HiddenAct)
	case c.SlidingWindow != 0:
		return bad("sliding_window %d is not supported", c.SlidingWindow)
	case c.IsMoE && (c.NumKeys() > 256 || c.NumExpertsPerTok > 256):
		return bad("num_experts %d (at most 256^2) and num_experts_per_tok %d (at most 256)", c.NumExperts, c.NumExpertsPerTok)
	case c.RoPE.PartialRotaryFactor != 0 && c.RoPE.PartialRotaryFactor != 1:
		return bad("partial_rotary_factor %v is not supported", c.RoPE.PartialRotaryFactor)
	}
	r := ropeOf(c)
	if err := r.Check(); err != nil {
		return bad("%v", err)
	}
	return nil
}

// ropeOf is the rotary embedding of the config.
func ropeOf(c *checkpoint.Config) *nn.RoPE {
	p := c.RoPE
	return &nn.RoPE{Type: p.Type, Theta: p.Theta, HeadDim: c.HeadDim, Factor: p.Factor, MaxPos: c.MaxPositionEmbeddings,
		OrigMax: p.OriginalMaxPositionEmbeddings, BetaFast: p.BetaFast, BetaSlow: p.BetaSlow, AttnScale: p.AttentionFactor, Truncate: p.Truncate}
}

// arrayOf is a checkpoint tensor as nn takes it (its bytes are the mapped file).
func arrayOf(t *checkpoint.Tensor) (*nn.Array, error) {
	if t == nil {
		return nil, nil
	}
	var dt dma.DType
	switch t.DType {
	case checkpoint.F32:
		dt = dma.Float32
	case checkpoint.F16:
		dt = dma.Float16
	case checkpoint.BF16:
		dt = dma.BFloat16
	default:
		return nil, fmt.Errorf("doge: tensor %s in %s: dtype %s (F32, F16 or BF16)", t.Name, t.File, t.DType)
	}
	b, err := t.Bytes()
	if err != nil {
		return nil, err
	}
	return &nn.Array{Name: t.Name, DType: dt, Shape: t.Shape, Data: b}, nil
}

// RoPEOf is the rotary embedding a model of config c uses (a fresh state).
func RoPEOf(c *checkpoint.Config) *nn.RoPE { return ropeOf(c) }
