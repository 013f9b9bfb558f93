package kern_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/ref"
	"github.com/dmavk/dmavk/vk"
)

// bwdProblem is one backward problem on the device: inputs uploaded, the plan built by
// RecordPlan and the forward run by RecordAttention, exactly as package dma runs them.
type bwdProblem struct {
	c                attnCase
	hb               int
	q, k, v, dO      *ref.Tensor4
	delta            []float64
	opts             ref.Options
	p                *kern.Params
	params, deltaBuf *vk.Buffer
	padBuf           *vk.Buffer
	plan             *kern.PlanBuffers
	bufs             *kern.BwdBuffers
	oRaw, lseRaw     []byte
	oGPU             *ref.Tensor4
	lseGPU           []float64
}

// f32View is the view of a float32 gradient stored like the case's tensors (same order
// and offset).
func f32View(c *attnCase, l, h int) kern.View { return attnViewOf(c, l, h) }

func newBwdProblem(t *testing.T, e *attnEnv, c attnCase) *bwdProblem {
	t.Helper()
	c.defaults()
	seed := uint64(len(c.name))
	for _, ch := range c.name {
		seed = seed*131 + uint64(ch)
	}
	rng := rand.New(rand.NewPCG(seed, 11))
	pr := &bwdProblem{c: c, hb: c.H}
	if c.hbKV {
		pr.hb = c.Hkv
	}
	hb := pr.hb
	pr.q = ref.RandTensor4(rng, c.B, c.Lq, c.H, c.D, c.qk)
	pr.k = ref.RandTensor4(rng, c.B, c.Lk, c.Hkv, c.D, c.qk)
	pr.v = ref.RandTensor4(rng, c.B, c.Lk, c.Hkv, c.D, 1)
	pr.dO = ref.RandTensor4(rng, c.B, c.Lq, c.H, c.D, 1)
	for _, x := range []*ref.Tensor4{pr.q, pr.k, pr.v, pr.dO} {
		attnRound(x.Data, c.storage())
	}
	if strings.Contains(c.name, "nan") {
		pr.v.Set(0, c.nanKey, 0, 3, math.NaN())
	}
	pr.delta = make([]float64, c.B*hb*c.Lk)
	for i := range pr.delta {
		switch c.weights {
		case "equal":
			pr.delta[i] = 1
		case "large":
			pr.delta[i] = 2e4 * (2*rng.Float64() - 1)
		case "ties":
			pr.delta[i] = float64(rng.IntN(3)) - 1
		default:
			pr.delta[i] = 4 * (2*rng.Float64() - 1)
		}
	}
	attnRound(pr.delta, kern.StorageF32)

	var padding [][]bool
	padBytes := make([]byte, (c.B*c.Lk+3)&^3)
	if c.pad != "" {
		padding = make([][]bool, c.B)
		for b := range c.B {
			padding[b] = make([]bool, c.Lk)
			for j := range c.Lk {
				padding[b][j] = !(c.pad == "batch1" && b == 1) && !(c.pad == "rand" && rng.IntN(4) == 0)
				if padding[b][j] {
					padBytes[b*c.Lk+j] = 1
				}
			}
		}
	}
	scale := float32(1 / math.Sqrt(float64(c.D)))
	pr.opts = ref.Options{Window: c.w, Mode: c.mode, Causal: c.causal, Scale: float64(scale),
		Softcap: float64(float32(c.softcap)), KeyPadding: padding}

	var maskBytes []byte
	var biasVals []float32
	var maskB, biasB kern.Broadcast
	if s := c.maskShape; s != nil {
		m := ref.NewBroadcast4Bool(s[0], s[1], s[2], s[3])
		for i := range m.Data {
			m.Data[i] = rng.IntN(3) != 0
		}
		pr.opts.Mask = m
		maskB = attnBroadcast(s, &c)
		maskBytes = make([]byte, int(maskB.Off)+len(m.Data))
		for i, x := range m.Data {
			if x {
				maskBytes[int(maskB.Off)+i] = 1
			}
		}
	}
	if s := c.biasShape; s != nil {
		x := ref.NewBroadcast4(s[0], s[1], s[2], s[3])
		x.Data = ref.Round32(ref.RandSlice(rng, len(x.Data), 2))
		pr.opts.Bias = x
		biasB = attnBroadcast(s, &c)
		biasVals = make([]float32, int(biasB.Off)+len(x.Data))
		for i, y := range x.Data {
			biasVals[int(biasB.Off)+i] = float32(y)
		}
	}

	if c.inject != "" {
		injectNonFinite(t, rand.New(rand.NewPCG(freshSeed(t), seed)), c.inject, pr.q, pr.k, pr.v, pr.delta, hb, pr.opts)
	}

	p := &kern.Params{B: uint32(c.B), Lq: uint32(c.Lq), Lk: uint32(c.Lk), H: uint32(c.H), Hkv: uint32(c.Hkv),
		Hb: uint32(hb), D: uint32(c.D), G: uint32(c.H / c.Hkv), Mode: uint32(c.mode), Causal: attnB2U(c.causal),
		Storage: c.storage(), PosOffset: int32(c.Lk - c.Lq), Scale: scale, Softcap: float32(c.softcap),
		KeyPadding: padding != nil,
		Q:          attnViewOf(&c, c.Lq, c.H), K: attnViewOf(&c, c.Lk, c.Hkv), V: attnViewOf(&c, c.Lk, c.Hkv), O: attnViewOf(&c, c.Lq, c.H),
		Mask: maskB, Bias: biasB}
	w := max(c.w, 1)
	p.Window = uint32(w)
	p.BlockC = uint32(kern.BlockSize(w))
	p.NBlocks = (p.Lk + p.BlockC - 1) / p.BlockC
	p.NCap = p.Window + p.BlockC
	pr.p = p

	deltaF := make([]float32, len(pr.delta))
	for i, x := range pr.delta {
		deltaF[i] = float32(x)
	}
	plan, err := kern.NewPlanBuffers(e.d, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { plan.Close() })
	pr.plan = plan
	pr.params = e.buffer(t, make([]byte, kern.ParamsSize))
	pr.deltaBuf = e.buffer(t, attnEncodeFloats(deltaF, kern.StorageF32))
	pr.padBuf = e.buffer(t, padBytes)

	b := &kern.BwdBuffers{}
	b.Q = e.buffer(t, attnEncodeTensor(pr.q, p.Q, p.Storage))
	b.K = e.buffer(t, attnEncodeTensor(pr.k, p.K, p.Storage))
	b.V = e.buffer(t, attnEncodeTensor(pr.v, p.V, p.Storage))
	b.Ord, b.U, b.UCount, b.Tau = plan.Ord, plan.U, plan.UCount, plan.Tau
	if c.mode != ref.ModeRow && c.mode != ref.ModeShared {
		b.U, b.UCount, b.Tau = nil, nil, nil
	}
	oImage := attnEncodeTensor(ref.NewTensor4(c.B, c.Lq, c.H, c.D), p.O, p.Storage)
	b.O = e.buffer(t, make([]byte, len(oImage)))
	b.LSE = e.buffer(t, make([]byte, 4*c.B*c.H*c.Lq))
	if maskBytes != nil {
		b.Mask = e.buffer(t, maskBytes)
	}
	if biasVals != nil {
		b.Bias = e.buffer(t, attnEncodeFloats(biasVals, kern.StorageF32))
	}
	// dO and the gradients use the views of Q (dQ, dO) and K (dK, dV), the gradients
	// counting float32 elements; the gaps between views hold NaN.
	b.DOView = p.O
	b.DO = e.buffer(t, attnEncodeTensor(pr.dO, b.DOView, p.Storage))
	b.DQView, b.DKView, b.DVView = f32View(&c, c.Lq, c.H), f32View(&c, c.Lk, c.Hkv), f32View(&c, c.Lk, c.Hkv)
	f32Bytes := func(v kern.View, l, h int) int { return 4 * (attnViewIndex(v, c.B-1, l-1, h-1, c.D-1) + 1) }
	b.DQ = e.buffer(t, make([]byte, f32Bytes(b.DQView, c.Lq, c.H)))
	b.DK = e.buffer(t, make([]byte, f32Bytes(b.DKView, c.Lk, c.Hkv)))
	b.DV = e.buffer(t, make([]byte, f32Bytes(b.DVView, c.Lk, c.Hkv)))
	b.DDelta = e.buffer(t, make([]byte, kern.BwdDDeltaSize(p)))
	b.DSum = e.buffer(t, make([]byte, kern.BwdDSumSize(p)))
	b.Perm = e.buffer(t, make([]byte, kern.BwdPermSize(p)))
	pr.bufs = b

	// Forward on the device: the plan and O, LSE, as package dma makes them (portable
	// kernel or another path: the backward takes any forward's O and LSE).
	e.k.SetPortableOnly(true)
	err = e.d.Run(context.Background(), func(r *vk.Recorder) error {
		if err := r.Update(pr.params, 0, p.Bytes()); err != nil {
			return err
		}
		r.Barrier()
		if err := e.k.RecordPlan(r, p, pr.params, pr.deltaBuf, pr.padBuf, plan); err != nil {
			return err
		}
		return e.k.RecordAttention(r, p, pr.params, &b.AttnBuffers)
	})
	if err != nil {
		t.Fatal(err)
	}
	pr.oRaw = make([]byte, b.O.Size())
	pr.lseRaw = make([]byte, b.LSE.Size())
	if err := b.O.Download(context.Background(), 0, pr.oRaw); err != nil {
		t.Fatal(err)
	}
	if err := b.LSE.Download(context.Background(), 0, pr.lseRaw); err != nil {
		t.Fatal(err)
	}
	pr.oGPU = ref.NewTensor4(c.B, c.Lq, c.H, c.D)
	for bb := range c.B {
		for i := range c.Lq {
			for h := range c.H {
				for d := range c.D {
					pr.oGPU.Set(bb, i, h, d, attnDecode(pr.oRaw, attnViewIndex(p.O, bb, i, h, d), p.Storage))
				}
			}
		}
	}
	pr.lseGPU = make([]float64, c.B*c.H*c.Lq)
	for i := range pr.lseGPU {
		pr.lseGPU[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(pr.lseRaw[4*i:])))
	}
	if c.inject != "" {
		// The backward takes the forward's O and LSE: they must be the reference's first.
		oRef, lseRef, err := ref.Forward(pr.q, pr.k, pr.v, pr.delta, hb, pr.opts)
		if err != nil {
			t.Fatal(err)
		}
		checkNonFinite(t, &pr.c, p, oRef, lseRef, pr.oRaw, pr.lseRaw)
	}
	return pr
}

// bwdGrads are the gradients read back from the device, in logical order.
type bwdGrads struct {
	dq, dk, dv, dd []float64
	raw            [][]byte // the downloaded buffers, for bitwise comparison
}

// run records the backward (params are rewritten first, as a fresh submission would) and
// downloads the gradients. Every output buffer is poisoned with NaN first.
func (pr *bwdProblem) run(t *testing.T, e *attnEnv, deterministic bool) *bwdGrads {
	t.Helper()
	b, p, c := pr.bufs, pr.p, &pr.c
	err := e.d.Run(context.Background(), func(r *vk.Recorder) error {
		if err := r.Update(pr.params, 0, p.Bytes()); err != nil {
			return err
		}
		for _, buf := range []*vk.Buffer{b.DQ, b.DK, b.DV, b.DDelta, b.DSum} {
			if err := r.Fill(buf, 0, buf.Size(), 0x7fc00000); err != nil {
				return err
			}
		}
		r.Barrier()
		return e.k.RecordBackward(r, p, pr.params, b, deterministic)
	})
	if err != nil {
		t.Fatal(err)
	}
	g := &bwdGrads{}
	read := func(buf *vk.Buffer) []byte {
		raw := make([]byte, buf.Size())
		if err := buf.Download(context.Background(), 0, raw); err != nil {
			t.Fatal(err)
		}
		g.raw = append(g.raw, raw)
		return raw
	}
	f32 := func(raw []byte, e int) float64 {
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*e:])))
	}
	tensor := func(buf *vk.Buffer, v kern.View, l, h int) []float64 {
		raw := read(buf)
		out := make([]float64, 0, c.B*l*h*c.D)
		for bb := range c.B {
			for i := range l {
				for hh := range h {
					for d := range c.D {
						out = append(out, f32(raw, attnViewIndex(v, bb, i, hh, d)))
					}
				}
			}
		}
		return out
	}
	g.dq = tensor(b.DQ, b.DQView, c.Lq, c.H)
	g.dk = tensor(b.DK, b.DKView, c.Lk, c.Hkv)
	g.dv = tensor(b.DV, b.DVView, c.Lk, c.Hkv)
	raw := read(b.DDelta)
	for i := range c.B * pr.hb * c.Lk {
		g.dd = append(g.dd, f32(raw, i))
	}
	return g
}

// check compares g with ref.Backward at the very inputs the device saw (the rounded
// Q, K, V, dO and weights, and the device's own O and LSE).
func (pr *bwdProblem) check(t *testing.T, g *bwdGrads, tol float64) {
	t.Helper()
	want, err := ref.Backward(pr.q, pr.k, pr.v, pr.delta, pr.hb, pr.opts, pr.oGPU, pr.lseGPU, pr.dO)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		name      string
		got, want []float64
	}{{"dQ", g.dq, want.DQ.Data}, {"dK", g.dk, want.DK.Data}, {"dV", g.dv, want.DV.Data}, {"dDelta", g.dd, want.DDelta}} {
		// NaN exactly where the reference has one (a NaN in V reaches the rows that keep
		// its key, and from them every key they keep); the rest is compared.
		got, want := append([]float64(nil), x.got...), append([]float64(nil), x.want...)
		nans := 0
		for i, v := range got {
			if math.IsNaN(v) != math.IsNaN(want[i]) {
				t.Fatalf("%s[%d] = %v, want %v", x.name, i, v, want[i])
			}
			if math.IsNaN(v) {
				got[i], want[i] = 0, 0
				nans++
			}
		}
		if pr.c.inject != "" && x.name == "dQ" && (nans == 0 || nans == len(got)) {
			t.Errorf("dQ: %d NaN of %d: the case tests nothing (inject %q)", nans, len(got), pr.c.inject)
		}
		if strings.Contains(pr.c.name, "nan") {
			// dV = sum P dO never reads V: no NaN there.
			if nans == len(got) || (nans == 0) != (x.name == "dV") {
				t.Errorf("%s: %d NaN of %d: the case tests nothing", x.name, nans, len(got))
			}
			t.Logf("%s: %d NaN of %d, as the reference", x.name, nans, len(got))
		}
		x.got, x.want = got, want
		rel := ref.RelErr(x.got, x.want)
		if ref.MaxAbsDiff(x.want, make([]float64, len(x.want))) == 0 {
			// The exact gradient is 0 (every row keeps one key, whose v is o: dP = Dsum),
			// while float32 leaves the cancellation of terms of size up to |dO| |v| (times
			// |q| or |k| for dK, dQ): measure against that size instead.
			rel = ref.MaxAbsDiff(x.got, x.want) / pr.termScale(x.name)
		}
		if rel > tol {
			worst, at := 0.0, 0
			for i := range x.got {
				if d := math.Abs(x.got[i] - x.want[i]); d > worst {
					worst, at = d, i
				}
			}
			t.Errorf("%s relative error %.3g > %.3g (worst at flat %d: got %v want %v)", x.name, rel, tol, at, x.got[at], x.want[at])
		} else {
			t.Logf("%s rel err %.2e", x.name, rel)
		}
	}
}

// termScale bounds the size of one term of a gradient: |dS| <= max |dO_i| max |v_j|
// (P <= 1, |dot(dO, v)| and |dot(dO, o)| both below it), times scale max |q_i| for dK
// and scale max |k_j| for dQ.
func (pr *bwdProblem) termScale(name string) float64 {
	norm := func(t *ref.Tensor4) float64 {
		m := 0.0
		for b := range t.B {
			for l := range t.L {
				for h := range t.H {
					s := 0.0
					for _, x := range t.Row(b, l, h) {
						s += x * x
					}
					m = max(m, math.Sqrt(s))
				}
			}
		}
		return m
	}
	f := norm(pr.dO) * norm(pr.v)
	switch name {
	case "dQ":
		f *= float64(pr.p.Scale) * norm(pr.k)
	case "dK":
		f *= float64(pr.p.Scale) * norm(pr.q)
	}
	return f
}

// bwdTol is the relative tolerance (to the largest reference entry) of every gradient.
// The reference gets exactly what the device reads: Q, K, V, dO rounded to the storage
// type, the float32 weights, and the device's own O and LSE (16-bit O included). So
// what is left is float32 arithmetic against float64, whatever the storage: scores to a
// few ulp, P = exp(s - lse) to about |s| ulp, sums of up to a few hundred terms. 2e-5
// leaves a margin of ~10x, as the forward's fp32 tolerance; it is tighter than the
// storage types' own precision (fp16 2e-3, bf16 1e-2), which the inputs already carry.
func bwdTol(c *attnCase) float64 {
	tol := 2e-5
	if c.weights == "large" {
		// Scores of ~2e4 carry float32 rounding of 2^-24 * 2e4 ~ 1.2e-3 absolute, which
		// moves P by as much relatively (the forward's tolerance says the same).
		tol = 3e-3
	}
	if c.qk > 1 {
		const eps32 = 1.0 / (1 << 24)
		tol += 2 * eps32 * c.qk * c.qk * math.Sqrt(float64(c.D)) * 4
	}
	return tol
}

func bwdCases() []attnCase {
	var cs []attnCase
	add := func(c attnCase) { cs = append(cs, c) }
	row, shared, none, expl := ref.ModeRow, ref.ModeShared, ref.ModeNone, ref.ModeExplicit
	for _, l := range []int{1, 7, 65, 130} {
		add(attnCase{name: fmt.Sprintf("row/causal/L%d", l), Lq: l, mode: row, causal: true, w: 16})
		add(attnCase{name: fmt.Sprintf("shared/causal/L%d", l), Lq: l, mode: shared, causal: true, w: 20, hbKV: true})
		add(attnCase{name: fmt.Sprintf("none/causal/L%d", l), Lq: l, mode: none, causal: true})
		add(attnCase{name: fmt.Sprintf("explicit/causal/L%d", l), Lq: l, mode: expl, causal: true,
			maskShape: []int{2, 1, l, l}, biasShape: []int{1, 4, 1, l}})
	}
	add(attnCase{name: "row/noncausal/L65", Lq: 65, mode: row, w: 8})
	add(attnCase{name: "shared/noncausal/L130/bhld", Lq: 130, mode: shared, w: 24, bhld: true})
	add(attnCase{name: "none/noncausal/L65/Hb=Hkv", Lq: 65, mode: none, hbKV: true})
	add(attnCase{name: "explicit/noncausal/mask-kvheads/bias-full", Lq: 65, mode: expl,
		maskShape: []int{1, 2, 65, 65}, biasShape: []int{2, 4, 65, 65}})
	add(attnCase{name: "explicit/causal/bias-only/softcap", Lq: 33, mode: expl, causal: true,
		biasShape: []int{2, 2, 33, 1}, softcap: 3})
	// Lq != Lk both ways (Lq > Lk leaves the first rows empty when causal).
	add(attnCase{name: "row/causal/Lq7-Lk130", Lq: 7, Lk: 130, mode: row, causal: true, w: 16})
	add(attnCase{name: "row/causal/Lq130-Lk7", Lq: 130, Lk: 7, mode: row, causal: true, w: 4})
	add(attnCase{name: "shared/causal/Lq100-Lk33", Lq: 100, Lk: 33, mode: shared, causal: true, w: 5})
	add(attnCase{name: "none/causal/Lq65-Lk20/bhld", Lq: 65, Lk: 20, mode: none, causal: true, bhld: true})
	add(attnCase{name: "explicit/causal/Lq9-Lk70", Lq: 9, Lk: 70, mode: expl, causal: true, maskShape: []int{2, 4, 9, 70}})
	// GQA / MQA and bias heads.
	add(attnCase{name: "row/MQA/Hb=Hkv", Lq: 65, H: 4, Hkv: 1, hbKV: true, mode: row, causal: true, w: 8})
	add(attnCase{name: "row/MQA/Hb=H", Lq: 65, H: 4, Hkv: 1, mode: row, causal: true, w: 8})
	add(attnCase{name: "row/GQA/Hb=Hkv/bhld/off", Lq: 130, hbKV: true, mode: row, causal: true, w: 32, bhld: true, off: 8})
	// Windows and weights.
	add(attnCase{name: "row/w1", Lq: 65, mode: row, causal: true, w: 1})
	add(attnCase{name: "row/w>=L", Lq: 130, mode: row, causal: true, w: 200})
	add(attnCase{name: "row/equal-weights", Lq: 130, mode: row, causal: true, w: 16, weights: "equal"})
	add(attnCase{name: "row/ties", Lq: 130, mode: row, causal: true, w: 10, weights: "ties"})
	add(attnCase{name: "row/large-weights", Lq: 130, mode: row, causal: true, w: 16, weights: "large"})
	add(attnCase{name: "row/multiblock-w40/pad", B: 1, Lq: 300, mode: row, causal: true, w: 40, pad: "rand"})
	// Key padding: rows with no kept key.
	add(attnCase{name: "row/pad-batch1", Lq: 65, mode: row, causal: true, w: 8, pad: "batch1"})
	add(attnCase{name: "shared/pad-rand", Lq: 65, mode: shared, causal: true, w: 8, pad: "rand"})
	add(attnCase{name: "explicit/nomask/pad", Lq: 40, mode: expl, causal: true, pad: "rand"})
	// Softcap.
	add(attnCase{name: "row/softcap", Lq: 65, mode: row, causal: true, w: 16, softcap: 2})
	add(attnCase{name: "none/softcap/Hb=Hkv", Lq: 65, mode: none, causal: true, softcap: 5, hbKV: true})
	// Head dimensions.
	for _, d := range []int{8, 40, 128, 256} {
		add(attnCase{name: fmt.Sprintf("row/D%d", d), Lq: 70, D: d, mode: row, causal: true, w: 12, B: 1})
	}
	// 16-bit storage.
	add(attnCase{name: "row/f16", Lq: 130, mode: row, causal: true, w: 16, f16: true})
	add(attnCase{name: "explicit/f16/bhld/off", Lq: 65, mode: expl, causal: true, f16: true, bhld: true, off: 6,
		maskShape: []int{2, 1, 65, 65}, biasShape: []int{1, 1, 65, 65}})
	add(attnCase{name: "row/bf16/MQA/pad", Lq: 65, H: 4, Hkv: 1, mode: row, causal: true, w: 8, bf16: true, pad: "rand"})
	add(attnCase{name: "shared/bf16/noncausal/bhld", Lq: 65, mode: shared, w: 16, bf16: true, bhld: true})
	// A NaN in one key's V reaches only the rows that keep it (and their keys).
	add(attnCase{name: "row/nan-v/sliding", Lq: 130, mode: row, causal: true, w: 8, nanKey: 50, weights: "equal"})
	add(attnCase{name: "none/nan-v/bf16", Lq: 65, mode: none, causal: true, nanKey: 30, bf16: true})
	add(attnCase{name: "none/f16/softcap/D256", Lq: 37, D: 256, B: 1, mode: none, causal: true, f16: true, softcap: 4})
	return cs
}

// TestBackward checks both modes of RecordBackward against ref.Backward.
func TestBackward(t *testing.T) {
	e := newAttnEnv(t)
	for _, c := range bwdCases() {
		t.Run(c.name, func(t *testing.T) {
			pr := newBwdProblem(t, e, c)
			for _, det := range []bool{false, true} {
				g := pr.run(t, e, det)
				t.Logf("deterministic=%v", det)
				pr.check(t, g, bwdTol(&pr.c))
			}
		})
	}
}

// TestBackwardDeterministic: two deterministic runs give the same bits in every output,
// on a problem where many tiles add into the same keys (GQA, sliding window, Hb = Hkv).
func TestBackwardDeterministic(t *testing.T) {
	e := newAttnEnv(t)
	for _, c := range []attnCase{
		{name: "det/row/GQA/Hb=Hkv", B: 1, Lq: 300, mode: ref.ModeRow, causal: true, w: 64, hbKV: true, H: 8, Hkv: 2},
		{name: "det/none/bf16", B: 1, Lq: 150, mode: ref.ModeNone, causal: false, bf16: true, H: 4, Hkv: 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			pr := newBwdProblem(t, e, c)
			a := pr.run(t, e, true)
			b := pr.run(t, e, true)
			for i := range a.raw {
				if string(a.raw[i]) != string(b.raw[i]) {
					t.Errorf("output %d (dQ, dK, dV, dDelta) differs between two deterministic runs", i)
				}
			}
			pr.check(t, a, bwdTol(&pr.c))
		})
	}
}

// TestBackwardErrors: bad buffers are rejected before any dispatch.
func TestBackwardErrors(t *testing.T) {
	e := newAttnEnv(t)
	pr := newBwdProblem(t, e, attnCase{name: "err/base", Lq: 9, mode: ref.ModeNone, causal: true})
	try := func(name, want string, edit func(b *kern.BwdBuffers, p *kern.Params)) {
		b := *pr.bufs
		p := *pr.p
		edit(&b, &p)
		err := e.d.Run(context.Background(), func(r *vk.Recorder) error {
			return e.k.RecordBackward(r, &p, pr.params, &b, true)
		})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one mentioning %q", name, err, want)
		}
	}
	try("nil dO", "DO", func(b *kern.BwdBuffers, p *kern.Params) { b.DO = nil })
	try("small dK", "DK", func(b *kern.BwdBuffers, p *kern.Params) { b.DK = e.buffer(t, make([]byte, 16)) })
	try("shared outputs", "distinct", func(b *kern.BwdBuffers, p *kern.Params) { b.DV = b.DK })
	try("no perm", "Perm", func(b *kern.BwdBuffers, p *kern.Params) { b.Perm = nil })
	try("D", "D=12", func(b *kern.BwdBuffers, p *kern.Params) { p.D = 12 })
}
