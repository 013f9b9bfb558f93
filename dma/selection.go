package dma

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/vk"
)

// SelectOptions describe the rows whose kept keys Select finds.
type SelectOptions struct {
	Lq     int  // query rows, the last Lq key positions (0: as many as keys)
	H      int  // query heads (0: the weights' heads); bias heads are H or H's kv heads
	Mode   Mode // ModeRow, ModeShared or ModeNone
	Window int
	Causal bool
}

// Selection is which keys every query row keeps, in O(L) numbers per head as the
// attention kernels hold it: each key's order bits (ord) and, per key position, the
// (ord, key) threshold of a row there (tau). Row i keeps key j when j is a candidate
// (j <= i + Lk - Lq when causal) and (ord_j, j) >= tau of its threshold position: its
// own in mode row with causality, the last key's in mode shared (and row without
// causality), none in mode none. Close it when done.
type Selection struct {
	ord, tau *vk.Buffer
	B, H, Hb int
	Lq, Lk   int
	Opt      SelectOptions // as given, Lq and H filled in
	// Mode is the mode the kernels run: ModeNone when the window covers every key.
	Mode Mode
	rng  [][2]float32 // finite weight range per batch * Hb + bias head
}

// Select computes the selection of weights w ([B, Hb, Lk]) for rows described by o,
// with the selection plan's kernels (the passes every Forward runs).
func (d *Device) Select(ctx context.Context, w *Weights, o SelectOptions) (*Selection, error) {
	if w == nil || w.buf.Device() != d.vd {
		return nil, fmt.Errorf("dma: Select: weights are nil or live on another device")
	}
	if o.Lq == 0 {
		o.Lq = w.Lk
	}
	if o.H == 0 {
		o.H = w.Hb
	}
	if o.Lq < 1 || o.Lq > w.Lk {
		return nil, fmt.Errorf("dma: Select: %d rows for %d keys (rows are the last key positions: 1 to Lk)", o.Lq, w.Lk)
	}
	if o.H%w.Hb != 0 && w.Hb%o.H != 0 {
		return nil, fmt.Errorf("dma: Select: %d query heads do not fit %d bias heads", o.H, w.Hb)
	}
	mode := o.Mode
	switch mode {
	case ModeRow, ModeShared:
		if o.Window < 1 {
			return nil, fmt.Errorf("dma: Select: window %d must be at least 1 in mode %v", o.Window, mode)
		}
		if o.Window >= w.Lk {
			mode = ModeNone
		}
	case ModeNone:
	default:
		return nil, fmt.Errorf("dma: Select: mode %v: row, shared or none", mode)
	}
	s := &Selection{B: w.B, H: o.H, Hb: w.Hb, Lq: o.Lq, Lk: w.Lk, Opt: o, Mode: mode}
	// The plan of mode row with causality over every key position: tau of each.
	win := max(o.Window, 1)
	c := kern.BlockSize(win)
	p := kern.Params{B: u32(w.B), Lq: u32(w.Lk), Lk: u32(w.Lk), H: u32(w.Hb), Hkv: u32(w.Hb), Hb: u32(w.Hb), G: 1, D: 8,
		Mode: kern.ModeRow, Causal: 1, Window: u32(win), BlockC: u32(c), NBlocks: u32((w.Lk + c - 1) / c), NCap: u32(win + c)}
	if mode == ModeNone {
		p.Mode = kern.ModeNone
	}
	plan, err := kern.NewPlanBuffers(d.vd, &p)
	if err != nil {
		return nil, fmt.Errorf("dma: Select: %w", err)
	}
	defer plan.Close()
	params, err := d.vd.NewBuffer(kern.ParamsSize)
	if err != nil {
		return nil, fmt.Errorf("dma: Select: %w", err)
	}
	defer params.Close()
	if mode == ModeNone { // no thresholds: every candidate is kept
		if err := d.vd.Run(ctx, func(r *vk.Recorder) error { return r.Fill(plan.Tau, 0, plan.Tau.Size(), 0) }); err != nil {
			return nil, err
		}
	}
	err = d.vd.Run(ctx, func(r *vk.Recorder) error {
		if err := r.Update(params, 0, p.Bytes()); err != nil {
			return err
		}
		r.Barrier()
		return d.kern.RecordPlan(r, &p, params, w.buf, nil, plan)
	})
	if err != nil {
		return nil, fmt.Errorf("dma: Select: %w", err)
	}
	// Keep ord and tau; the rest of the plan goes.
	s.ord, s.tau = plan.Ord, plan.Tau
	plan.Ord, plan.Tau = nil, nil
	vals, err := w.Download(ctx)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.rng = make([][2]float32, w.B*w.Hb)
	for bh := range s.rng {
		s.rng[bh] = colourRange(vals[bh*w.Lk : (bh+1)*w.Lk])
	}
	return s, nil
}

// BiasHead is the bias head of query head h.
func (s *Selection) BiasHead(h int) int {
	if s.Hb == s.H {
		return h
	}
	return h / (s.H / s.Hb)
}

// colourRange is the 1st and 99th percentiles of the finite weights: a few outliers
// would otherwise squeeze every other weight into one colour.
func colourRange(w []float32) [2]float32 {
	var f []float32
	for _, x := range w {
		if !math.IsInf(float64(x), 0) && !math.IsNaN(float64(x)) {
			f = append(f, x)
		}
	}
	if len(f) == 0 {
		return [2]float32{0, 0}
	}
	slices.Sort(f)
	n := len(f) - 1
	return [2]float32{f[n/100], f[n-n/100]}
}

// WeightRange is the range of weights a picture of batch b, query head h spans with its
// colours: the 1st to the 99th percentile of the finite weights (colours saturate
// beyond).
func (s *Selection) WeightRange(b, h int) (lo, hi float32) {
	r := s.rng[b*s.Hb+s.BiasHead(h)]
	return r[0], r[1]
}

// Buffers are the device buffers of the selection: ord, uint32 [B*Hb][Lk], and tau,
// uint32 pairs [B*Hb][Lk] by key position. For renderers on the same device (package
// heatmap); they belong to the Selection.
func (s *Selection) Buffers() (ord, tau *vk.Buffer) { return s.ord, s.tau }

// Kept reads the selection back as the Lq x Lk mask of batch b, query head h
// (row-major, true = kept).
func (s *Selection) Kept(ctx context.Context, b, h int) ([]bool, error) {
	if b < 0 || b >= s.B || h < 0 || h >= s.H {
		return nil, fmt.Errorf("dma: Selection.Kept: batch %d head %d outside [%d %d]", b, h, s.B, s.H)
	}
	bh := b*s.Hb + s.BiasHead(h)
	lk := int64(s.Lk)
	ordRaw := make([]byte, lk*4)
	tauRaw := make([]byte, lk*8)
	if err := s.ord.Download(ctx, int64(bh)*lk*4, ordRaw); err != nil {
		return nil, err
	}
	if err := s.tau.Download(ctx, int64(bh)*lk*8, tauRaw); err != nil {
		return nil, err
	}
	u32at := func(b []byte, i int) uint32 {
		return uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24
	}
	ge := func(ao, aj, bo, bj uint32) bool { return ao > bo || (ao == bo && aj >= bj) }
	out := make([]bool, s.Lq*s.Lk)
	for i := range s.Lq {
		p := i + s.Lk - s.Lq
		t := p
		if s.Mode == ModeShared || !s.Opt.Causal {
			t = s.Lk - 1
		}
		to, tj := u32at(tauRaw, 2*t), u32at(tauRaw, 2*t+1)
		if s.Mode == ModeNone {
			to, tj = 0, 0
		}
		for j := range s.Lk {
			if s.Opt.Causal && j > p {
				continue
			}
			o := u32at(ordRaw, j)
			out[i*s.Lk+j] = o != 0 && ge(o, uint32(j), to, tj)
		}
	}
	return out, nil
}

// Close frees the selection.
func (s *Selection) Close() error {
	if s.ord != nil {
		s.ord.Close()
		s.tau.Close()
		s.ord, s.tau = nil, nil
	}
	return nil
}
