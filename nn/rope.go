package nn

import (
	"fmt"
	"math"
)

// RoPE computes rotary-embedding tables as HF transformers does (modeling_rope_utils):
// rope types "default", "linear", "dynamic" (NTK, recomputed as the sequence grows
// past MaxPositions, as dynamic_rope_update does) and "yarn". Tables are float32, cos
// and sin of float32(inv_freq * position), times the attention scaling.
type RoPE struct {
	Type      string  // "default" (or ""), "linear", "dynamic", "yarn"
	Theta     float64 // rope_theta
	HeadDim   int
	Factor    float64 // linear, dynamic, yarn
	MaxPos    int     // max_position_embeddings
	OrigMax   int     // yarn: original_max_position_embeddings
	BetaFast  float64 // yarn (0: 32)
	BetaSlow  float64 // yarn (0: 1)
	AttnScale float64 // yarn: attention_factor (0: from the factor)
	Truncate  *bool   // yarn (nil: true)

	invFreq []float32
	scale   float32
	cached  int // dynamic: the sequence length inv_freq was computed for
}

// Check reports a configuration RoPE cannot compute.
func (r *RoPE) Check() error {
	switch r.Type {
	case "", "default":
	case "linear", "dynamic", "yarn":
		if !(r.Factor > 0) {
			return fmt.Errorf("nn: rope type %q needs a positive factor, got %v", r.Type, r.Factor)
		}
		if r.Type == "yarn" && r.OrigMax <= 0 {
			return fmt.Errorf("nn: rope type yarn needs original_max_position_embeddings")
		}
		if r.Type == "dynamic" && r.MaxPos <= 0 {
			return fmt.Errorf("nn: rope type dynamic needs max_position_embeddings")
		}
	default:
		return fmt.Errorf("nn: rope type %q is not supported (default, linear, dynamic, yarn)", r.Type)
	}
	if r.HeadDim < 2 || r.HeadDim%2 != 0 || !(r.Theta > 0) {
		return fmt.Errorf("nn: rope: head dim %d (even) and theta %v (positive)", r.HeadDim, r.Theta)
	}
	return nil
}

// invFreqOf returns inv_freq for base theta: 1 / theta^(2i/dim), as torch computes it
// from a Python float base: in float32, the base rounded to float32 first.
func invFreqOf(theta float64, dim int) []float32 {
	base := float64(float32(theta))
	out := make([]float32, dim/2)
	for i := range out {
		ex := float32(2*i) / float32(dim)
		out[i] = 1 / float32(math.Pow(base, float64(ex)))
	}
	return out
}

// compute sets inv_freq and the scaling for a forward pass over positions below seqLen.
func (r *RoPE) compute(seqLen int) {
	dim := r.HeadDim
	switch r.Type {
	case "linear":
		r.invFreq = invFreqOf(r.Theta, dim)
		for i := range r.invFreq {
			r.invFreq[i] /= float32(r.Factor)
		}
		r.scale = 1
	case "dynamic":
		// transformers computes the new base from the length as a float32 tensor.
		sl := float32(max(seqLen, r.MaxPos))
		grow := float32(float32(r.Factor)*sl)/float32(r.MaxPos) - float32(r.Factor-1)
		base := float64(float32(r.Theta) * float32(math.Pow(float64(grow), float64(dim)/float64(dim-2))))
		r.invFreq, r.scale = invFreqOf(base, dim), 1
	case "yarn":
		r.invFreq, r.scale = r.yarn()
	default:
		r.invFreq, r.scale = invFreqOf(r.Theta, dim), 1
	}
}

func (r *RoPE) yarn() ([]float32, float32) {
	dim, base, factor := r.HeadDim, r.Theta, r.Factor
	mscale := func(s float64) float64 {
		if s <= 1 {
			return 1
		}
		return 0.1*math.Log(s) + 1
	}
	att := r.AttnScale
	if att == 0 {
		att = mscale(factor)
	}
	fast, slow := r.BetaFast, r.BetaSlow
	if fast == 0 {
		fast = 32
	}
	if slow == 0 {
		slow = 1
	}
	corr := func(rot float64) float64 {
		return float64(dim) * math.Log(float64(r.OrigMax)/(rot*2*math.Pi)) / (2 * math.Log(base))
	}
	low, high := corr(fast), corr(slow)
	if r.Truncate == nil || *r.Truncate {
		low, high = math.Floor(low), math.Ceil(high)
	}
	low, high = max(low, 0), min(high, float64(dim-1))
	if low == high {
		high += 0.001
	}
	out := make([]float32, dim/2)
	for i := range out {
		pos := float32(math.Pow(base, float64(float32(2*i)/float32(dim))))
		extra := 1 / pos
		inter := 1 / (float32(factor) * pos)
		ramp := float32(min(max((float64(i)-low)/(high-low), 0), 1))
		ef := 1 - ramp
		out[i] = inter*(1-ef) + extra*ef
	}
	return out, float32(att)
}

// Table fills cs ([len(pos), HeadDim] float32: pairs cos, sin for each of HeadDim/2
// frequencies) for the positions of one forward pass; maxPos is the largest position
// of the pass (dynamic RoPE depends on it, as transformers' does: the frequencies grow
// with the sequence and are kept until a pass within the original length).
func (r *RoPE) Table(pos []int, maxPos int) []float32 {
	seqLen := maxPos + 1
	switch {
	case r.invFreq == nil:
		r.compute(seqLen)
		r.cached = max(seqLen, r.MaxPos)
	case r.Type == "dynamic" && seqLen > r.cached:
		r.compute(seqLen)
		r.cached = seqLen
	case r.Type == "dynamic" && seqLen < r.MaxPos && r.cached > r.MaxPos:
		r.compute(r.MaxPos)
		r.cached = r.MaxPos
	}
	half := r.HeadDim / 2
	cs := make([]float32, len(pos)*r.HeadDim)
	for t, p := range pos {
		for i := 0; i < half; i++ {
			f := float64(r.invFreq[i] * float32(p))
			cs[t*r.HeadDim+2*i] = float32(math.Cos(f)) * r.scale
			cs[t*r.HeadDim+2*i+1] = float32(math.Sin(f)) * r.scale
		}
	}
	return cs
}

// InvFreq is the inverse frequencies of the last Table (nil before the first).
func (r *RoPE) InvFreq() []float32 { return r.invFreq }

// InvFreqFor is the inverse frequencies a pass over positions below seqLen would use
// now, without changing the state.
func (r *RoPE) InvFreqFor(seqLen int) []float32 {
	c := *r
	c.Table(nil, seqLen-1)
	return c.invFreq
}
