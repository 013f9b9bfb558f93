package dma

import "fmt"

// Mode is how each query row chooses its keys.
type Mode int

const (
	// ModeRow: each row keeps the Window best-weighted keys of its own candidates (the
	// paper's DMA). It is the zero Mode, but with the zero Window (every key) it is
	// dense attention: see Options.
	ModeRow Mode = iota
	// ModeShared: one choice per batch and head, the Window best-weighted keys overall;
	// each row keeps those among its candidates.
	ModeShared
	// ModeNone: no selection; every candidate is kept (dense attention plus bias).
	ModeNone
	// ModeExplicit: the caller's Mask and/or Bias decide, as flash-dmattn accepts.
	ModeExplicit
)

// String names the mode as ParseMode reads it.
func (m Mode) String() string {
	switch m {
	case ModeRow:
		return "row"
	case ModeShared:
		return "shared"
	case ModeNone:
		return "none"
	case ModeExplicit:
		return "explicit"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode reads "row", "shared", "none" or "explicit".
func ParseMode(s string) (Mode, error) {
	for m := ModeRow; m <= ModeExplicit; m++ {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("dma: unknown mode %q (row, shared, none, explicit)", s)
}

// Form is the formula that turns dt into a weight.
type Form int

const (
	FormExp    Form = iota // delta = exp(A * softplus(dt)) (the paper, HF Doge)
	FormLinear             // delta = A * softplus(dt)
)

// String names the form.
func (f Form) String() string {
	if f == FormLinear {
		return "linear"
	}
	return "exp"
}

// WeightParams are the parameters that make the dynamic weights from V:
// dt = Vf * Wdt + Bdt, with Vf the concatenation of a key's Hkv value vectors.
type WeightParams struct {
	Wdt  []float32 // [Hkv*D][Hb], row-major
	Bdt  []float32 // [Hb], or nil
	A    []float32 // [Hb]
	Hb   int       // H or Hkv
	Form Form
}

// Options configures Forward, Backward and the steps of a KVCache.
//
// The zero Options is dense attention: every query row attends every key, without
// causality, scale 1/sqrt(D), no bias, as flash_attn_func(q, k, v) and torch's
// scaled_dot_product_attention(q, k, v) compute by default. Causal: true makes it
// causal (a decoder); Window > 0 with Weights or WeightParams makes it DMA, each row
// keeping the Window best-weighted keys of its candidates (Mode, zero: ModeRow):
//
//	dma.Options{}                                          // dense
//	dma.Options{Causal: true}                              // dense causal
//	dma.Options{Window: 2048, Causal: true, Weights: w}    // DMA, the paper's mode row
type Options struct {
	Mode Mode
	// Window is w, the keys each row keeps in ModeRow and ModeShared. 0 keeps every
	// key, as does any window of at least Lk (the call is then ModeNone, exactly: no
	// selection, the weights, when given, still bias the scores); a window from 1 to
	// Lk-1 needs Weights or WeightParams to rank the keys. Negative windows are errors.
	Window int
	Causal bool // row i sees keys j <= i + Lk - Lq (bottom-right alignment)
	// Scale multiplies q.k; 0 means 1/sqrt(D).
	Scale float32
	// Softcap, when positive, maps scores s to Softcap*tanh(s/Softcap).
	Softcap float32

	// The weights: given (Weights), or computed from V in the same submission
	// (WeightParams). ModeRow and ModeShared with a window need one of them; without
	// a window and in ModeNone and ModeExplicit they are optional (no weight bias
	// without). A KVCache step ignores both: the cache holds its keys' weights, so one
	// Options serves a prefill's Forward and the decode steps after it.
	Weights      *Weights
	WeightParams *WeightParams

	KeyPadding *KeyPadding // optional: keys that do not exist
	Mask       *Mask       // ModeExplicit only
	Bias       *Bias       // ModeExplicit only

	// SavePlan makes Forward keep its selection plan in the Result (and, on the
	// coopmat2 path, its packed kept keys and values), so that Backward with the same
	// arguments reuses them instead of building them again. The memory is linear in Lk:
	// per batch and bias head about 8 (Lk + 2w) + 8 Lq bytes of plan, plus 4 (Lk + n w) D
	// bytes of packed keys and values (n = the selection blocks, Lk / w rounded up),
	// held until the Result is closed. Ignored by the decode kernels and KV caches.
	SavePlan bool
}
