package kern

import (
	"container/heap"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/ref"
	"github.com/dmavk/dmavk/vk"
)

// selectSeed is the seed of the random inputs: DMAVK_SEED when set, else fresh.
func selectSeed(t testing.TB) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("DMAVK_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			t.Fatalf("DMAVK_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (rerun with DMAVK_SEED=%d)", seed, seed)
	return seed
}

// Weight kinds of the tests.
const (
	wNormal = iota
	wEqual
	wDup3
	wZeros
	wLarge
	wInf
	wNaN
	numWeightKinds
)

var weightNames = []string{"normal", "equal", "dup3", "zeros", "large", "inf", "nan"}

func genWeights(rng *rand.Rand, kind, n int) []float32 {
	x := make([]float32, n)
	negZero := float32(math.Copysign(0, -1))
	for i := range x {
		switch kind {
		case wNormal:
			x[i] = float32(rng.NormFloat64())
		case wEqual:
			x[i] = 1.5
		case wDup3:
			x[i] = []float32{-1, 0.25, 3}[rng.IntN(3)]
		case wZeros:
			switch r := rng.IntN(10); {
			case r < 4:
				x[i] = 0
			case r < 8:
				x[i] = negZero
			default: // denormals around zero and a normal value
				x[i] = []float32{math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32, 1}[rng.IntN(3)]
			}
		case wLarge:
			switch rng.IntN(4) {
			case 0:
				x[i] = []float32{math.MaxFloat32, -math.MaxFloat32, 1e38, -1e38, -1e-38}[rng.IntN(5)]
			default:
				x[i] = float32(rng.NormFloat64() * 1e37)
			}
		case wInf:
			switch rng.IntN(10) {
			case 0, 1, 2:
				x[i] = float32(math.Inf(1))
			case 3, 4, 5:
				x[i] = float32(math.Inf(-1))
			default:
				x[i] = float32(rng.NormFloat64())
			}
		case wNaN: // NaNs of both signs and any payload (all equal weights), infinities
			switch rng.IntN(10) {
			case 0, 1:
				x[i] = math.Float32frombits(0x7f800001 | rng.Uint32()&0x807fffff)
			case 2:
				x[i] = float32(math.Inf(1))
			case 3:
				x[i] = float32(math.Inf(-1))
			default:
				x[i] = float32(rng.NormFloat64())
			}
		}
	}
	return x
}

// Key-padding kinds.
const (
	padNone = iota
	padSome // ~20% of the keys removed
	padAll  // every key removed
	numPadKinds
)

var padNames = []string{"nopad", "pad20", "padall"}

// genPadding returns the [B][Lk] validity (nil for padNone).
func genPadding(rng *rand.Rand, kind, b, lk int) [][]bool {
	if kind == padNone {
		return nil
	}
	v := make([][]bool, b)
	for i := range v {
		v[i] = make([]bool, lk)
		for j := range v[i] {
			v[i][j] = kind == padSome && rng.IntN(5) != 0
		}
	}
	return v
}

// planParams fills the selection fields of Params as the caller does.
func planParams(b, hb, lq, lk, w int, mode uint32, causal bool) *Params {
	c := BlockSize(w)
	p := &Params{
		B: uint32(b), Lq: uint32(lq), Lk: uint32(lk), H: uint32(hb), Hkv: uint32(hb), Hb: uint32(hb), D: 64, G: 1,
		Mode: mode, Window: uint32(w), BlockC: uint32(c), NBlocks: uint32((lk + c - 1) / c), NCap: uint32(w + c),
		PosOffset: int32(lk - lq),
	}
	if causal {
		p.Causal = 1
	}
	return p
}

// gpuPlan is the downloaded plan.
type gpuPlan struct {
	ord, ucount, vcount []uint32
	u, tau              []Key
}

const poison = 0xdeadbeef

func newBuf(t testing.TB, d *vk.Device, size int64) *vk.Buffer {
	t.Helper()
	b, err := d.NewBuffer(size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func u32s(b []byte) []uint32 {
	out := make([]uint32, len(b)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return out
}

func keys(b []byte) []Key {
	w := u32s(b)
	out := make([]Key, len(w)/2)
	for i := range out {
		out[i] = Key{w[2*i], w[2*i+1]}
	}
	return out
}

func download(t testing.TB, b *vk.Buffer) []byte {
	t.Helper()
	out := make([]byte, b.Size())
	if err := b.Download(context.Background(), 0, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// runPlan uploads delta ([B][Hb][Lk]) and the padding, records the plan with the given
// shared-memory budget (< 0: the device's) and downloads every plan buffer, which starts
// filled with poison.
func runPlan(t testing.TB, k *Kernels, p *Params, delta []float32, valid [][]bool, budget int64) gpuPlan {
	t.Helper()
	d := k.Device()
	ctx := context.Background()
	params := newBuf(t, d, ParamsSize)
	db := make([]byte, 4*len(delta))
	for i, x := range delta {
		binary.LittleEndian.PutUint32(db[4*i:], math.Float32bits(x))
	}
	dbuf := newBuf(t, d, int64(len(db)))
	if err := dbuf.Upload(ctx, 0, db); err != nil {
		t.Fatal(err)
	}
	var pbuf *vk.Buffer
	p.KeyPadding = valid != nil
	if valid != nil {
		pb := make([]byte, (int(p.B)*int(p.Lk)+3)&^3)
		for b := range valid {
			for j, ok := range valid[b] {
				if ok {
					pb[b*int(p.Lk)+j] = 1
				}
			}
		}
		pbuf = newBuf(t, d, int64(len(pb)))
		if err := pbuf.Upload(ctx, 0, pb); err != nil {
			t.Fatal(err)
		}
	}
	plan, err := NewPlanBuffers(d, p)
	if err != nil {
		t.Fatal(err)
	}
	defer plan.Close()
	if budget < 0 {
		budget = int64(d.Caps().MaxSharedMemory)
	}
	err = d.Run(ctx, func(r *vk.Recorder) error {
		for _, b := range []*vk.Buffer{plan.Ord, plan.U, plan.UCount, plan.Tau, plan.Scratch} {
			if err := r.Fill(b, 0, b.Size(), poison); err != nil {
				return err
			}
		}
		if err := r.Update(params, 0, p.Bytes()); err != nil {
			return err
		}
		r.Barrier()
		return k.recordPlan(r, p, params, dbuf, pbuf, plan, budget)
	})
	if err != nil {
		t.Fatal(err)
	}
	return gpuPlan{
		ord:    u32s(download(t, plan.Ord)),
		u:      keys(download(t, plan.U)),
		ucount: u32s(download(t, plan.UCount)),
		tau:    keys(download(t, plan.Tau)),
		vcount: u32s(download(t, plan.Scratch)),
	}
}

// oracleOrd is kern.Ord of the weights of (b, hb), 0 where padded.
func oracleOrd(p *Params, delta []float32, valid [][]bool, b, hb int) []uint32 {
	lk := int(p.Lk)
	ord := make([]uint32, lk)
	for j := range ord {
		if valid == nil || valid[b][j] {
			ord[j] = Ord(delta[(b*int(p.Hb)+hb)*lk+j])
		}
	}
	return ord
}

// fastTau computes BuildPlanCPU's Tau in O(Lk log w) with a heap of the w best keys;
// TestSelectStamps checks the pass names that RecordPlan reports, in order, per mode.
func TestSelectStamps(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	k := New(d)
	defer k.Close()
	ctx := context.Background()
	const lk = 300
	delta := newBuf(t, d, 4*lk)
	params := newBuf(t, d, ParamsSize)
	for _, c := range []struct {
		mode   uint32
		causal bool
		want   []string
	}{
		{ModeRow, true, []string{"ord", "sort", "blocks", "tau"}},
		{ModeRow, false, []string{"ord", "sort", "blocks"}},
		{ModeShared, true, []string{"ord", "sort", "blocks"}},
		{ModeNone, true, []string{"ord"}},
	} {
		p := planParams(1, 1, lk, lk, 7, c.mode, c.causal)
		plan, err := NewPlanBuffers(d, p)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		err = d.Run(ctx, func(r *vk.Recorder) error {
			if err := r.Update(params, 0, p.Bytes()); err != nil {
				return err
			}
			r.Barrier()
			return k.RecordPlan(r, p, params, delta, nil, plan, func(pass string) error {
				got = append(got, pass)
				return nil
			})
		})
		plan.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("mode %d causal %v: passes %q, want %q", c.mode, c.causal, got, c.want)
		}
	}
}

// TestSelectTauOracle checks it against BuildPlanCPU.
func fastTau(ord []uint32, w, lq int) []Key {
	lk := len(ord)
	at := make([]Key, lk) // tau at each position
	h := &keyHeap{}
	n := 0
	for j, o := range ord {
		if o != 0 {
			n++
			k := Key{o, uint32(j)}
			if h.Len() < w {
				heap.Push(h, k)
			} else if (*h)[0].Less(k) {
				(*h)[0] = k
				heap.Fix(h, 0)
			}
		}
		if n > w {
			at[j] = (*h)[0]
		}
	}
	tau := make([]Key, lq)
	for i := range tau {
		if pos := i + lk - lq; pos >= 0 {
			tau[i] = at[pos]
		}
	}
	return tau
}

// checkPlan compares g with BuildPlanCPU for every (b, hb); tau is checked when
// p.Mode is row and causal. It reports at most a few mismatches.
func checkAgainstCPU(t testing.TB, p *Params, delta []float32, valid [][]bool, g gpuPlan) {
	t.Helper()
	lk, lq, w := int(p.Lk), int(p.Lq), int(p.Window)
	rowCausal := p.Mode == ModeRow && p.Causal == 1
	nb, ncap := int(p.NBlocks), int(p.NCap)
	bad := 0
	fail := func(format string, args ...any) {
		t.Helper()
		if bad++; bad <= 5 {
			t.Errorf(format, args...)
		}
	}
	for b := range int(p.B) {
		for hb := range int(p.Hb) {
			bh := b*int(p.Hb) + hb
			ord := oracleOrd(p, delta, valid, b, hb)
			for j, o := range ord {
				if got := g.ord[bh*lk+j]; got != o {
					fail("bh %d: ord[%d] = %#x, want %#x (weight %g)", bh, j, got, o, delta[bh*lk+j])
				}
			}
			if p.Mode != ModeRow && p.Mode != ModeShared {
				continue
			}
			// BuildPlanCPU's tau is quadratic: use it on small problems, fastTau (checked
			// against it by TestSelectTauOracle) on large ones.
			slow := rowCausal && lk*lq <= 250_000
			cpu := BuildPlanCPU(ord, w, lq, slow)
			if len(cpu.U) != nb+1 {
				t.Fatalf("oracle has %d lists, params say nb+1 = %d", len(cpu.U), nb+1)
			}
			v := 0 // V_b, valid keys before block b
			for blk := range nb + 1 {
				if got := g.vcount[bh*(nb+1)+blk]; int(got) != v {
					fail("bh %d: vcount[%d] = %d, want %d", bh, blk, got, v)
				}
				for j := blk * int(p.BlockC); j < min((blk+1)*int(p.BlockC), lk); j++ {
					if ord[j] != 0 {
						v++
					}
				}
			}
			for blk, want := range cpu.U {
				if got := g.ucount[bh*(nb+1)+blk]; int(got) != len(want) {
					fail("bh %d: ucount[%d] = %d, want %d", bh, blk, got, len(want))
					continue
				}
				got := g.u[(bh*(nb+1)+blk)*ncap:][:len(want)]
				if i := firstDiff(got, want); i >= 0 {
					fail("bh %d: U_%d[%d] = %v, want %v (|U_%d| = %d)", bh, blk, i, got[i], want[i], blk, len(want))
				}
			}
			if rowCausal {
				want := cpu.Tau
				if !slow {
					want = fastTau(ord, w, lq)
				}
				got := g.tau[bh*lq:][:lq]
				if i := firstDiff(got, want); i >= 0 {
					fail("bh %d: tau[%d] (pos %d) = %v, want %v", bh, i, i+lk-lq, got[i], want[i])
				}
			}
		}
	}
	if bad > 5 {
		t.Errorf("... %d mismatching lists in all", bad)
	}
}

func firstDiff(a, b []Key) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// budgets runs the variants of select_sort and select_blocks: the device's shared memory
// (either pass may still fall back to global memory) and none (both global).
var budgets = []struct {
	name   string
	budget int64
}{{"shared", -1}, {"global", 0}}

// TestSelectPlan sweeps shapes, windows and inputs in mode row, causal (ord, U, ucount
// and tau), with the shared- and global-memory variants of select_sort and select_blocks.
func TestSelectPlan(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	k := New(d)
	defer k.Close()
	t.Logf("device %s, %d bytes of shared memory", d.Caps().Name, d.Caps().MaxSharedMemory)
	rng := rand.New(rand.NewPCG(selectSeed(t), 7))
	type tcase struct{ lk, lq, w, b, hb, wk, pk int }
	var cases []tcase
	for _, lk := range []int{1, 5, 63, 64, 65, 200, 1000, 3000} {
		var ws []int
		for _, w := range []int{1, 2, 7, 64, 100, lk - 1, lk} {
			if w >= 1 && w <= lk && !slices.Contains(ws, w) {
				ws = append(ws, w)
			}
		}
		lqs := []int{lk, lk + 1 + rng.IntN(40)}
		if lk > 1 {
			lqs = append(lqs, 1+rng.IntN(lk-1))
		}
		for _, w := range ws {
			for _, lq := range lqs {
				cases = append(cases, tcase{lk, lq, w, 1 + rng.IntN(2), []int{1, 3}[rng.IntN(2)],
					rng.IntN(numWeightKinds), []int{padNone, padNone, padSome, padSome, padAll}[rng.IntN(5)]})
			}
		}
	}
	// Every weight kind with every padding kind, on two shapes that have several blocks.
	for wk := range numWeightKinds {
		for pk := range numPadKinds {
			cases = append(cases, tcase{300, 300, 7, 2, 3, wk, pk}, tcase{1000, 777, 100, 1, 3, wk, pk})
		}
	}
	for _, c := range cases {
		name := fmt.Sprintf("Lk=%d/Lq=%d/w=%d/B=%d/Hb=%d/%s/%s", c.lk, c.lq, c.w, c.b, c.hb, weightNames[c.wk], padNames[c.pk])
		t.Run(name, func(t *testing.T) {
			delta := genWeights(rng, c.wk, c.b*c.hb*c.lk)
			valid := genPadding(rng, c.pk, c.b, c.lk)
			for _, v := range budgets {
				p := planParams(c.b, c.hb, c.lq, c.lk, c.w, ModeRow, true)
				g := runPlan(t, k, p, delta, valid, v.budget)
				t.Run(v.name, func(t *testing.T) { checkAgainstCPU(t, p, delta, valid, g) })
			}
		})
	}
}

// TestSelectTauOracle checks the test's fast tau oracle against BuildPlanCPU.
func TestSelectTauOracle(t *testing.T) {
	rng := rand.New(rand.NewPCG(selectSeed(t), 8))
	for range 300 {
		lk := 1 + rng.IntN(300)
		lq := 1 + rng.IntN(lk+20)
		w := 1 + rng.IntN(lk+2)
		x := genWeights(rng, rng.IntN(numWeightKinds), lk)
		ord := make([]uint32, lk)
		pk := rng.IntN(numPadKinds)
		for j := range ord {
			if pk == padNone || (pk == padSome && rng.IntN(5) != 0) {
				ord[j] = Ord(x[j])
			}
		}
		want := BuildPlanCPU(ord, w, lq, true).Tau
		if i := firstDiff(fastTau(ord, w, lq), want); i >= 0 {
			t.Fatalf("Lk=%d Lq=%d w=%d: fastTau[%d] = %v, BuildPlanCPU %v", lk, lq, w, i, fastTau(ord, w, lq)[i], want[i])
		}
	}
}

// TestSelectModes checks which passes each mode records: none and explicit write only
// ord; shared and row without causality write U and ucount but no tau.
func TestSelectModes(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	k := New(d)
	defer k.Close()
	rng := rand.New(rand.NewPCG(selectSeed(t), 9))
	const lk, lq, w, b, hb = 333, 300, 50, 2, 3
	for _, m := range []struct {
		name         string
		mode         uint32
		causal       bool
		hasU, hasTau bool
	}{
		{"none", ModeNone, true, false, false},
		{"explicit", ModeExplicit, false, false, false},
		{"shared-causal", ModeShared, true, true, false},
		{"shared", ModeShared, false, true, false},
		{"row", ModeRow, false, true, false},
		{"row-causal", ModeRow, true, true, true},
	} {
		t.Run(m.name, func(t *testing.T) {
			delta := genWeights(rng, wNormal, b*hb*lk)
			valid := genPadding(rng, padSome, b, lk)
			p := planParams(b, hb, lq, lk, w, m.mode, m.causal)
			g := runPlan(t, k, p, delta, valid, -1)
			checkAgainstCPU(t, p, delta, valid, g)
			untouched := func(what string, words []uint32) {
				for i, x := range words {
					if x != poison {
						t.Errorf("%s written at word %d in mode %s", what, i, m.name)
						return
					}
				}
			}
			if !m.hasU {
				untouched("ucount", g.ucount)
			}
			if !m.hasTau {
				tw := make([]uint32, 0, 2*len(g.tau))
				for _, x := range g.tau {
					tw = append(tw, x.Ord, x.Idx)
				}
				untouched("tau", tw)
			}
		})
	}
}

// TestSelectKeepMatchesRef ties the contract of doc.go to the spec: the keep mask that
// the rules of doc.go derive from the GPU plan equals ref.Keep's.
func TestSelectKeepMatchesRef(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	k := New(d)
	defer k.Close()
	rng := rand.New(rand.NewPCG(selectSeed(t), 10))
	const b, hb, g = 2, 2, 2 // H = 4 query heads over Hkv = Hb = 2 bias heads
	for _, lk := range []int{1, 9, 70, 130} {
		for _, lq := range []int{lk, max(1, lk-3), lk + 5} {
			for _, w := range []int{1, 3, 64, 65} {
				for _, mode := range []ref.Mode{ref.ModeRow, ref.ModeShared, ref.ModeNone} {
					for _, causal := range []bool{true, false} {
						wk, pk := rng.IntN(numWeightKinds), rng.IntN(numPadKinds)
						name := fmt.Sprintf("Lk=%d/Lq=%d/w=%d/%s/causal=%v/%s/%s", lk, lq, w, mode, causal, weightNames[wk], padNames[pk])
						t.Run(name, func(t *testing.T) {
							keepVsRef(t, k, b, hb, g, lq, lk, w, mode, causal, wk, pk, rng)
						})
					}
				}
			}
		}
	}
}

func keepVsRef(t *testing.T, k *Kernels, b, hb, g, lq, lk, w int, mode ref.Mode, causal bool, wk, pk int, rng *rand.Rand) {
	delta := genWeights(rng, wk, b*hb*lk)
	valid := genPadding(rng, pk, b, lk)
	kmode := map[ref.Mode]uint32{ref.ModeRow: ModeRow, ref.ModeShared: ModeShared, ref.ModeNone: ModeNone}[mode]
	p := planParams(b, hb, lq, lk, w, kmode, causal)
	p.H, p.G = uint32(hb*g), uint32(g)
	plan := runPlan(t, k, p, delta, valid, -1)

	s := ref.Shape{B: b, Lq: lq, Lk: lk, H: hb * g, Hkv: hb}
	d64 := make([]float64, len(delta))
	for i, x := range delta {
		d64[i] = float64(x)
	}
	want, err := ref.Keep(d64, hb, s, ref.Options{Mode: mode, Causal: causal, Window: w, KeyPadding: valid})
	if err != nil {
		t.Fatal(err)
	}
	nb, ncap := int(p.NBlocks), int(p.NCap)
	for bi := range b {
		for h := range s.H {
			bh := bi*hb + s.BiasHead(h, hb)
			ord := plan.ord[bh*lk:][:lk]
			var final map[int]bool
			if mode != ref.ModeNone {
				final = map[int]bool{}
				n := int(plan.ucount[bh*(nb+1)+nb])
				for _, key := range plan.u[(bh*(nb+1)+nb)*ncap:][:n] {
					final[int(key.Idx)] = true
				}
			}
			for i := range lq {
				pos := i + lk - lq
				for j := range lk {
					var keep bool
					switch {
					case causal && (pos < 0 || j > pos):
					case mode == ref.ModeRow && causal:
						tau := plan.tau[bh*lq+i]
						keep = ord[j] > 0 && !(Key{ord[j], uint32(j)}).Less(tau)
					case mode == ref.ModeNone:
						keep = ord[j] > 0
					default: // shared, or row without causality
						keep = final[j]
					}
					if wantK := want[((bi*s.H+h)*lq+i)*lk+j]; keep != wantK {
						t.Fatalf("b %d h %d row %d (pos %d) key %d: plan keeps %v, ref.Keep %v", bi, h, i, pos, j, keep, wantK)
					}
				}
			}
		}
	}
}

// BenchmarkSelectPlan times the plan at Lk = Lq = 32768, w = 2048, B = 1, Hb = 8 (row,
// causal), and the passes by difference: ord alone (mode none), ord + U (mode shared).
func BenchmarkSelectPlan(b *testing.B) {
	d := vktest.Device(b, vk.Features{})
	k := New(d)
	defer k.Close()
	const lk, w, bb, hb = 32768, 2048, 1, 8
	rng := rand.New(rand.NewPCG(1, 2))
	delta := genWeights(rng, wNormal, bb*hb*lk)
	db := make([]byte, 4*len(delta))
	for i, x := range delta {
		binary.LittleEndian.PutUint32(db[4*i:], math.Float32bits(x))
	}
	ctx := context.Background()
	dbuf := newBuf(b, d, int64(len(db)))
	if err := dbuf.Upload(ctx, 0, db); err != nil {
		b.Fatal(err)
	}
	params := newBuf(b, d, ParamsSize)
	for _, m := range []struct {
		name   string
		mode   uint32
		budget int64
	}{{"ord", ModeNone, -1}, {"ord+U", ModeShared, -1}, {"all", ModeRow, -1}, {"all-globalsort", ModeRow, 0}} {
		b.Run(m.name, func(b *testing.B) {
			p := planParams(bb, hb, lk, lk, w, m.mode, true)
			plan, err := NewPlanBuffers(d, p)
			if err != nil {
				b.Fatal(err)
			}
			defer plan.Close()
			budget := m.budget
			if budget < 0 {
				budget = int64(d.Caps().MaxSharedMemory)
			}
			var gpu float64
			for b.Loop() {
				ts, err := d.RunTimed(ctx, func(r *vk.Recorder) error {
					if err := r.Update(params, 0, p.Bytes()); err != nil {
						return err
					}
					r.Barrier()
					if err := r.Timestamp("start"); err != nil {
						return err
					}
					if err := k.recordPlan(r, p, params, dbuf, nil, plan, budget); err != nil {
						return err
					}
					return r.Timestamp("end")
				})
				if err != nil {
					b.Fatal(err)
				}
				if len(ts) == 2 {
					gpu += ts[1].Nanos - ts[0].Nanos
				}
			}
			b.ReportMetric(gpu/float64(b.N)/1e6, "gpu-ms/op")
		})
	}
}

// TestSelectTauEdges aims at select_tau's chunks (R = selectTauRows key positions per
// workgroup) and its walk over U_b in tiles: rows whose chunk starts with few valid keys
// (runs of padded keys, sparse keys, the front of every block padded), counts that reach
// w inside a chunk, V_b <= w with the block's first keys padded, windows around R and
// the tile size, w >= Lk, Lq != Lk, ties; and one input built so that E0, the entries of
// U_b before a chunk, has exactly w of its w+1 keys in the first tile of the walk.
func TestSelectTauEdges(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	k := New(d)
	defer k.Close()
	rng := rand.New(rand.NewPCG(selectSeed(t), 11))

	t.Run("tile-boundary", func(t *testing.T) {
		// w = 200: C = 256 = one tile. Keys 0..199 weigh 2 (S_1), 200..255 are padded
		// (V_1 = w), key 256 weighs 1, 257..312 weigh 3, the rest 0.5. U_1: 312..257,
		// 199..0 (the first tile holds w keys of [0, 256]), then 256: row 256 keeps 200 of
		// 201 valid keys, and tau is key 0.
		const lk, w = 512, 200
		delta := make([]float32, lk)
		valid := [][]bool{make([]bool, lk)}
		for j := range delta {
			valid[0][j] = j < 200 || j >= 256
			switch {
			case j < 256:
				delta[j] = 2
			case j == 256:
				delta[j] = 1
			case j <= 312:
				delta[j] = 3
			default:
				delta[j] = 0.5
			}
		}
		for _, lq := range []int{lk, 300, lk + 9} {
			p := planParams(1, 1, lq, lk, w, ModeRow, true)
			g := runPlan(t, k, p, delta, valid, -1)
			checkAgainstCPU(t, p, delta, valid, g)
			if i := 256 - (lk - lq); i >= 0 && i < lq && (g.tau[i] != Key{Ord(2), 0}) {
				t.Errorf("Lq=%d: tau at position 256 = %v, want key 0", lq, g.tau[i])
			}
		}
	})

	t.Run("rows-before-key-0", func(t *testing.T) {
		// Lq - Lk = 900 rows at positions < 0, more than the workgroups (one per chunk of
		// selectTauRows positions) cover in one sweep.
		const lk, lq, w = 100, 1000, 3
		delta := genWeights(rng, wNormal, lk)
		p := planParams(1, 1, lq, lk, w, ModeRow, true)
		checkAgainstCPU(t, p, delta, nil, runPlan(t, k, p, delta, nil, -1))
	})

	pads := []struct {
		name string
		gen  func(lk, w int) []bool
	}{
		{"runs", func(lk, w int) []bool { // alternating runs of 1 .. 3w+64 keys
			v := make([]bool, lk)
			on := rng.IntN(2) == 0
			for j := 0; j < lk; {
				n := 1 + rng.IntN(3*w+64)
				for ; n > 0 && j < lk; n-- {
					v[j] = on
					j++
				}
				on = !on
			}
			return v
		}},
		{"sparse", func(lk, w int) []bool { // about one key in 20 valid
			v := make([]bool, lk)
			for j := range v {
				v[j] = rng.IntN(20) == 0
			}
			return v
		}},
		{"front", func(lk, w int) []bool { // the first half of every block padded
			c := BlockSize(w)
			v := make([]bool, lk)
			for j := range v {
				v[j] = j%c >= c/2
			}
			return v
		}},
	}
	for _, lk := range []int{700, 2000} {
		for _, w := range []int{1, 5, 63, 64, 65, 130, 200, 300, 700, 2500} {
			for _, pad := range pads {
				for _, lq := range []int{lk, lk - 100 - rng.IntN(100), lk + 1 + rng.IntN(60)} {
					const b, hb = 2, 2
					wk := []int{wNormal, wEqual, wDup3}[rng.IntN(3)]
					name := fmt.Sprintf("Lk=%d/Lq=%d/w=%d/%s/%s", lk, lq, w, pad.name, weightNames[wk])
					t.Run(name, func(t *testing.T) {
						delta := genWeights(rng, wk, b*hb*lk)
						valid := make([][]bool, b)
						for i := range valid {
							valid[i] = pad.gen(lk, w)
						}
						p := planParams(b, hb, lq, lk, w, ModeRow, true)
						g := runPlan(t, k, p, delta, valid, -1)
						checkAgainstCPU(t, p, delta, valid, g)
					})
				}
			}
		}
	}
}
