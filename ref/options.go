package ref

import (
	"fmt"
	"math"
)

// Mode chooses how the keys of each query row are selected (spec section 2).
type Mode int

const (
	// ModeRow keeps, for each row i, the Window best-ranked keys of its
	// candidates C_i, or all of C_i when there are at most Window of them
	// (the paper, Eq. 4).
	ModeRow Mode = iota
	// ModeShared takes one top-Window selection per batch and query head
	// over all valid keys; row i keeps the selected keys that are in C_i.
	ModeShared
	// ModeNone keeps all of C_i: dense attention plus the weight bias.
	ModeNone
	// ModeExplicit keeps the keys of C_i that Options.Mask allows and adds
	// Options.Bias to the scores.
	ModeExplicit
)

// String returns the mode's name as the spec writes it.
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

// Options are the settings of one attention call.
//
// The candidates of row i are C_i = {j : j <= p_i} when Causal, else all
// keys, minus the keys that KeyPadding marks invalid. Every mode, explicit
// included, keeps only candidates.
type Options struct {
	// Window is w, the number of keys kept per row (ModeRow) or per head
	// (ModeShared); it must be >= 1 there and is ignored otherwise.
	Window int
	// Mode selects the keys; see Mode.
	Mode Mode
	// Causal restricts row i to keys j <= p_i = i + (Lk - Lq).
	Causal bool
	// Scale multiplies q·k; 0 means 1/sqrt(D).
	Scale float64
	// Softcap, when > 0, replaces s by Softcap*tanh(s/Softcap) after the
	// weights and bias are added; 0 turns it off.
	Softcap float64
	// KeyPadding is an optional [B][Lk] mask, true = key valid; nil means
	// every key is valid. Invalid keys are never kept, and in ModeShared
	// they do not compete for the Window places.
	KeyPadding [][]bool
	// Mask is ModeExplicit's boolean mask (true = keep), broadcastable over
	// [B, H or Hkv, Lq, Lk]; nil keeps every candidate. Only ModeExplicit
	// may set it.
	Mask *Broadcast4Bool
	// Bias is ModeExplicit's additive score bias, broadcastable over
	// [B, H or Hkv, Lq, Lk]; nil adds nothing. Only ModeExplicit may set it.
	// Its gradient is not computed.
	Bias *Broadcast4
}

// scale returns the effective scale for head dimension d.
func (o Options) scale(d int) float64 {
	if o.Scale == 0 {
		return 1 / math.Sqrt(float64(d))
	}
	return o.Scale
}

// check validates the options against the problem shape.
func (o Options) check(s Shape) error {
	switch o.Mode {
	case ModeRow, ModeShared:
		if o.Window < 1 {
			return fmt.Errorf("ref: mode %v needs Window >= 1, got %d", o.Mode, o.Window)
		}
	case ModeNone, ModeExplicit:
	default:
		return fmt.Errorf("ref: unknown mode %v", o.Mode)
	}
	if o.Mode != ModeExplicit && (o.Mask != nil || o.Bias != nil) {
		return fmt.Errorf("ref: Mask and Bias are for ModeExplicit only, mode is %v", o.Mode)
	}
	if o.Softcap < 0 || math.IsNaN(o.Softcap) || math.IsInf(o.Softcap, 0) {
		return fmt.Errorf("ref: Softcap must be finite and >= 0, got %v", o.Softcap)
	}
	if math.IsNaN(o.Scale) || math.IsInf(o.Scale, 0) {
		return fmt.Errorf("ref: Scale must be finite, got %v", o.Scale)
	}
	if o.KeyPadding != nil {
		if len(o.KeyPadding) != s.B {
			return fmt.Errorf("ref: KeyPadding has %d batches, want %d", len(o.KeyPadding), s.B)
		}
		for b, row := range o.KeyPadding {
			if len(row) != s.Lk {
				return fmt.Errorf("ref: KeyPadding[%d] has %d keys, want %d", b, len(row), s.Lk)
			}
		}
	}
	if m := o.Mask; m != nil {
		if err := checkBroadcast("Mask", m.B, m.H, m.Lq, m.Lk, len(m.Data), s); err != nil {
			return err
		}
	}
	if x := o.Bias; x != nil {
		if err := checkBroadcast("Bias", x.B, x.H, x.Lq, x.Lk, len(x.Data), s); err != nil {
			return err
		}
	}
	return nil
}

// validKey reports whether key j of batch b survives key padding.
func (o Options) validKey(b, j int) bool {
	return o.KeyPadding == nil || o.KeyPadding[b][j]
}
