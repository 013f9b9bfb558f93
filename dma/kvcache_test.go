package dma_test

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/dmavk/dmavk/dma"
	"github.com/stretchr/testify/require"
)

// seqData is one sequence's random inputs: q [1, N, H, D], k and v [1, N, Hkv, D],
// weights [Hb][N].
type seqData struct {
	n, h, hkv, hb, d int
	q, k, v, w       []float32
}

func newSeqData(rng interface{ Float64() float64 }, n, h, hkv, hb, d int) *seqData {
	r := func(k int, s float64) []float32 {
		x := make([]float32, k)
		for i := range x {
			x[i] = float32(s * (2*rng.Float64() - 1))
		}
		return x
	}
	return &seqData{n: n, h: h, hkv: hkv, hb: hb, d: d, q: r(n*h*d, 1), k: r(n*hkv*d, 1), v: r(n*hkv*d, 1), w: r(hb*n, 4)}
}

// bits gives the bit patterns of x (NaNs compare equal to themselves).
func bits(x []float32) []uint32 {
	out := make([]uint32, len(x))
	for i, v := range x {
		out[i] = math.Float32bits(v)
	}
	return out
}

// rows returns rows [a, b) of a [1, N, heads, D] array.
func rows(x []float32, heads, d, a, b int) []float32 { return x[a*heads*d : b*heads*d] }

// weightCols returns keys [a, b) of the [Hb][N] weights, as [Hb][b-a].
func (s *seqData) weightCols(a, b int) []float32 {
	var out []float32
	for hb := range s.hb {
		out = append(out, s.w[hb*s.n+a:hb*s.n+b]...)
	}
	return out
}

// TestKVCacheMatchesForward: a prefill of n keys then single-token steps (append one
// key, attend its query row) give, row by row, the O and LSE of one Forward over all
// the tokens; two sequences of different lengths share the cache, steps interleaved.
func TestKVCacheMatchesForward(t *testing.T) {
	d := open(t)
	rng := seed(t)
	ctx := context.Background()
	const h, hkv, dim = 4, 2, 32
	for _, dt := range []dma.DType{dma.Float32, dma.Float16} {
		for _, mode := range []dma.Mode{dma.ModeRow, dma.ModeNone} {
			for _, hb := range []int{hkv, h} {
				t.Run(fmt.Sprintf("%v/%v/Hb%d", dt, mode, hb), func(t *testing.T) {
					opt := dma.Options{Mode: mode, Window: 24, Causal: true}
					seqs := []*seqData{newSeqData(rng, 40, h, hkv, hb, dim), newSeqData(rng, 1100, h, hkv, hb, dim)}
					prefill := []int{33, 1096}
					c, err := d.NewKVCache(dma.KVCacheConfig{Sequences: 2, Capacity: 1100, KVHeads: hkv, HeadDim: dim, BiasHeads: hb, DType: dt})
					require.NoError(t, err)
					defer c.Close()
					type full struct{ o, lse []float32 }
					want := make([]full, len(seqs))
					for i, s := range seqs {
						w, err := d.NewWeights(1, hb, s.n)
						require.NoError(t, err)
						defer w.Close()
						require.NoError(t, w.Upload(ctx, s.w))
						fo := opt
						fo.Weights = w
						res, err := d.Forward(ctx, tensor(t, d, dt, dma.Shape{B: 1, L: s.n, H: h, D: dim}, s.q),
							tensor(t, d, dt, dma.Shape{B: 1, L: s.n, H: hkv, D: dim}, s.k),
							tensor(t, d, dt, dma.Shape{B: 1, L: s.n, H: hkv, D: dim}, s.v), fo)
						require.NoError(t, err)
						defer res.Close()
						want[i].o, err = res.O.Download(ctx)
						require.NoError(t, err)
						want[i].lse, err = res.LSE.Download(ctx)
						require.NoError(t, err)
					}
					appendKeys := func(i, a, b int) {
						s := seqs[i]
						w, err := d.NewWeights(1, hb, b-a)
						require.NoError(t, err)
						defer w.Close()
						require.NoError(t, w.Upload(ctx, s.weightCols(a, b)))
						require.NoError(t, c.Append(ctx, i, tensor(t, d, dt, dma.Shape{B: 1, L: b - a, H: hkv, D: dim}, rows(s.k, hkv, dim, a, b)),
							tensor(t, d, dt, dma.Shape{B: 1, L: b - a, H: hkv, D: dim}, rows(s.v, hkv, dim, a, b)), w))
					}
					for i := range seqs {
						appendKeys(i, 0, prefill[i])
					}
					// AttendInto's recorded steps, one query tensor and result per sequence
					// reused at every step: bit-identical to Attend's.
					var qStep []*dma.Tensor
					var outStep []*dma.Result
					for range seqs {
						qt, err := d.NewTensor(dt, dma.Shape{B: 1, L: 1, H: h, D: dim}, dma.BLHD)
						require.NoError(t, err)
						defer qt.Close()
						out, err := c.NewResult(qt)
						require.NoError(t, err)
						defer out.Close()
						qStep, outStep = append(qStep, qt), append(outStep, out)
					}
					oTol, lseTol := 1e-5, 1e-5
					if dt == dma.Float16 {
						oTol = 2e-3 // O rounded to half on both sides, summed in another order
					}
					for step := 0; ; step++ {
						done := true
						for i, s := range seqs {
							pos := prefill[i] + step
							if pos >= s.n {
								continue
							}
							done = false
							appendKeys(i, pos, pos+1)
							require.Equal(t, pos+1, c.Len(i))
							res, err := c.Attend(ctx, i, tensor(t, d, dt, dma.Shape{B: 1, L: 1, H: h, D: dim}, rows(s.q, h, dim, pos, pos+1)), opt)
							require.NoError(t, err)
							o, err := res.O.Download(ctx)
							require.NoError(t, err)
							lse, err := res.LSE.Download(ctx)
							require.NoError(t, err)
							res.Close()
							require.NoError(t, qStep[i].Upload(ctx, rows(s.q, h, dim, pos, pos+1)))
							require.NoError(t, c.AttendInto(ctx, i, qStep[i], outStep[i], opt))
							o2, err := outStep[i].O.Download(ctx)
							require.NoError(t, err)
							lse2, err := outStep[i].LSE.Download(ctx)
							require.NoError(t, err)
							require.Equal(t, bits(o), bits(o2), "seq %d pos %d: AttendInto's O", i, pos)
							require.Equal(t, bits(lse), bits(lse2), "seq %d pos %d: AttendInto's LSE", i, pos)
							wo := rows(want[i].o, h, dim, pos, pos+1)
							maxAbs := 0.0
							for _, x := range wo {
								maxAbs = max(maxAbs, math.Abs(float64(x)))
							}
							for e := range o {
								require.InDeltaf(t, wo[e], o[e], oTol*max(maxAbs, 1e-3), "seq %d pos %d O[%d]", i, pos, e)
							}
							for hh := range h {
								wl := float64(want[i].lse[hh*s.n+pos])
								require.InDeltaf(t, wl, float64(lse[hh]), lseTol*(1+math.Abs(wl)), "seq %d pos %d LSE head %d", i, pos, hh)
							}
						}
						if done {
							break
						}
					}
				})
			}
		}
	}
}

// TestKVCacheErrors: bad use gets clear errors and changes nothing.
func TestKVCacheErrors(t *testing.T) {
	d := open(t)
	ctx := context.Background()
	_, err := d.NewKVCache(dma.KVCacheConfig{Sequences: 1, Capacity: 0, KVHeads: 1, HeadDim: 32, DType: dma.Float32})
	require.ErrorContains(t, err, "at least 1")
	c, err := d.NewKVCache(dma.KVCacheConfig{Sequences: 1, Capacity: 4, KVHeads: 1, HeadDim: 32, DType: dma.Float32})
	require.NoError(t, err)
	defer c.Close()
	kv := func(n int) *dma.Tensor { return tensor(t, d, dma.Float32, dma.Shape{B: 1, L: n, H: 1, D: 32}, nil) }
	w := func(n int) *dma.Weights {
		x, err := d.NewWeights(1, 1, n)
		require.NoError(t, err)
		t.Cleanup(func() { x.Close() })
		require.NoError(t, x.Upload(ctx, make([]float32, n)))
		return x
	}
	require.NoError(t, c.Append(ctx, 0, kv(3), kv(3), w(3)))
	require.ErrorContains(t, c.Append(ctx, 0, kv(2), kv(2), w(2)), "capacity")
	require.Equal(t, 3, c.Len(0))
	require.ErrorContains(t, c.Append(ctx, 1, kv(1), kv(1), w(1)), "sequence 1")
	require.ErrorContains(t, c.Append(ctx, 0, kv(1), kv(1), w(2)), "weights")
	q := func(n int) *dma.Tensor { return tensor(t, d, dma.Float32, dma.Shape{B: 1, L: n, H: 2, D: 32}, nil) }
	_, err = c.Attend(ctx, 0, q(5), dma.Options{Mode: dma.ModeNone, Causal: true})
	require.ErrorContains(t, err, "query rows")
	_, err = c.Attend(ctx, 0, q(1), dma.Options{Mode: dma.ModeExplicit, Window: 1, Causal: true})
	require.ErrorContains(t, err, "row, shared or none")
	_, err = c.Attend(ctx, 0, q(1), dma.Options{Mode: dma.ModeShared, Window: 1})
	require.ErrorContains(t, err, "Causal")
	_, err = c.Attend(ctx, 0, q(1), dma.Options{Mode: dma.ModeRow, Window: 1})
	require.ErrorContains(t, err, "Causal")
	res, err := c.Attend(ctx, 0, q(1), dma.Options{Mode: dma.ModeRow, Window: 1, Causal: true})
	require.NoError(t, err)
	require.Equal(t, "decode", res.Path)
	res.Close()
	require.NoError(t, c.Reset(0))
	_, err = c.Attend(ctx, 0, q(1), dma.Options{Mode: dma.ModeNone, Causal: true})
	require.ErrorContains(t, err, "empty")
	require.NoError(t, c.Close())
	require.ErrorContains(t, c.Append(ctx, 0, kv(1), kv(1), w(1)), "closed")
	_, err = c.Attend(ctx, 0, q(1), dma.Options{Mode: dma.ModeNone, Causal: true})
	require.ErrorContains(t, err, "closed")
}

// TestKVCacheConcurrent: goroutines decoding their own sequences of one cache at once.
func TestKVCacheConcurrent(t *testing.T) {
	d := open(t)
	ctx := context.Background()
	const seqs, steps, dim = 4, 12, 32
	c, err := d.NewKVCache(dma.KVCacheConfig{Sequences: seqs, Capacity: steps, KVHeads: 1, HeadDim: dim, DType: dma.Float16})
	require.NoError(t, err)
	defer c.Close()
	errs := make(chan error, seqs)
	for s := range seqs {
		go func() {
			errs <- func() error {
				// Odd sequences decode through recorded steps (AttendInto), even ones
				// through Attend: both kinds run at once on one cache.
				qStep, err := d.NewTensor(dma.Float16, dma.Shape{B: 1, L: 1, H: 2, D: dim}, dma.BLHD)
				if err != nil {
					return err
				}
				defer qStep.Close()
				out, err := c.NewResult(qStep)
				if err != nil {
					return err
				}
				defer out.Close()
				for range steps {
					k, err := d.NewTensor(dma.Float16, dma.Shape{B: 1, L: 1, H: 1, D: dim}, dma.BLHD)
					if err != nil {
						return err
					}
					defer k.Close()
					if err := k.Upload(ctx, make([]float32, dim)); err != nil {
						return err
					}
					w, err := d.NewWeights(1, 1, 1)
					if err != nil {
						return err
					}
					defer w.Close()
					if err := w.Upload(ctx, []float32{1}); err != nil {
						return err
					}
					if err := c.Append(ctx, s, k, k, w); err != nil {
						return err
					}
					q, err := d.NewTensor(dma.Float16, dma.Shape{B: 1, L: 1, H: 2, D: dim}, dma.BLHD)
					if err != nil {
						return err
					}
					defer q.Close()
					if err := q.Upload(ctx, make([]float32, 2*dim)); err != nil {
						return err
					}
					opt := dma.Options{Mode: dma.ModeRow, Window: 4, Causal: true}
					if s%2 == 1 {
						if err := qStep.Upload(ctx, make([]float32, 2*dim)); err != nil {
							return err
						}
						if err := c.AttendInto(ctx, s, qStep, out, opt); err != nil {
							return err
						}
						continue
					}
					res, err := c.Attend(ctx, s, q, opt)
					if err != nil {
						return err
					}
					res.Close()
				}
				return nil
			}()
		}()
	}
	for range seqs {
		require.NoError(t, <-errs)
	}
	for s := range seqs {
		require.Equal(t, steps, c.Len(s))
	}
}

// TestKVCacheAttendBatch: one submission for several sequences of different lengths and
// row counts gives exactly what Attend gives sequence by sequence.
func TestKVCacheAttendBatch(t *testing.T) {
	d := open(t)
	rng := seed(t)
	ctx := context.Background()
	const h, hkv, dim = 4, 2, 32
	lens, nrows := []int{70, 1500, 5}, []int{1, 4, 2}
	c, err := d.NewKVCache(dma.KVCacheConfig{Sequences: 3, Capacity: 1500, KVHeads: hkv, HeadDim: dim, DType: dma.Float16})
	require.NoError(t, err)
	defer c.Close()
	var qs []*dma.Tensor
	for i, n := range lens {
		s := newSeqData(rng, n, h, hkv, hkv, dim)
		w, err := d.NewWeights(1, hkv, n)
		require.NoError(t, err)
		defer w.Close()
		require.NoError(t, w.Upload(ctx, s.w))
		require.NoError(t, c.Append(ctx, i, tensor(t, d, dma.Float16, dma.Shape{B: 1, L: n, H: hkv, D: dim}, s.k),
			tensor(t, d, dma.Float16, dma.Shape{B: 1, L: n, H: hkv, D: dim}, s.v), w))
		qs = append(qs, tensor(t, d, dma.Float16, dma.Shape{B: 1, L: nrows[i], H: h, D: dim}, rows(s.q, h, dim, n-nrows[i], n)))
	}
	opt := dma.Options{Mode: dma.ModeRow, Window: 16, Causal: true}
	batch, err := c.AttendBatch(ctx, []int{0, 1, 2}, qs, opt)
	require.NoError(t, err)
	for i := range lens {
		one, err := c.Attend(ctx, i, qs[i], opt)
		require.NoError(t, err)
		for _, pair := range [][2]func() ([]float32, error){
			{func() ([]float32, error) { return batch[i].O.Download(ctx) }, func() ([]float32, error) { return one.O.Download(ctx) }},
			{func() ([]float32, error) { return batch[i].LSE.Download(ctx) }, func() ([]float32, error) { return one.LSE.Download(ctx) }},
		} {
			a, err := pair[0]()
			require.NoError(t, err)
			b, err := pair[1]()
			require.NoError(t, err)
			require.Equal(t, b, a, "sequence %d", i)
		}
		one.Close()
		batch[i].Close()
	}
	_, err = c.AttendBatch(ctx, []int{0, 1}, qs, opt)
	require.ErrorContains(t, err, "sequences for")
}

// TestKVCacheAttendInto: more recorded steps than the cache keeps (query tensors taken
// in turn, so recordings are dropped and made again) still give Attend's bits; bad
// outputs get clear errors.
func TestKVCacheAttendInto(t *testing.T) {
	d := open(t)
	rng := seed(t)
	ctx := context.Background()
	const h, hkv, dim, n = 4, 2, 32, 300
	s := newSeqData(rng, n, h, hkv, hkv, dim)
	c, err := d.NewKVCache(dma.KVCacheConfig{Sequences: 1, Capacity: n, KVHeads: hkv, HeadDim: dim, DType: dma.Float32})
	require.NoError(t, err)
	defer c.Close()
	w, err := d.NewWeights(1, hkv, n)
	require.NoError(t, err)
	defer w.Close()
	require.NoError(t, w.Upload(ctx, s.weightCols(0, n)))
	require.NoError(t, c.Append(ctx, 0, tensor(t, d, dma.Float32, dma.Shape{B: 1, L: n, H: hkv, D: dim}, s.k),
		tensor(t, d, dma.Float32, dma.Shape{B: 1, L: n, H: hkv, D: dim}, s.v), w))
	opt := dma.Options{Mode: dma.ModeRow, Window: 40, Causal: true}
	const tensors = 20 // more than the cache keeps recorded
	var qs []*dma.Tensor
	var outs []*dma.Result
	for i := range tensors {
		q := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: 1 + i%2, H: h, D: dim}, rows(s.q, h, dim, 0, 1+i%2))
		out, err := c.NewResult(q)
		require.NoError(t, err)
		defer out.Close()
		qs, outs = append(qs, q), append(outs, out)
	}
	for round := range 3 {
		for i, q := range qs {
			want, err := c.Attend(ctx, 0, q, opt)
			require.NoError(t, err)
			wo, err := want.O.Download(ctx)
			require.NoError(t, err)
			want.Close()
			require.NoError(t, c.AttendInto(ctx, 0, q, outs[i], opt))
			o, err := outs[i].O.Download(ctx)
			require.NoError(t, err)
			require.Equal(t, bits(wo), bits(o), "round %d tensor %d", round, i)
		}
	}
	err = c.AttendInto(ctx, 0, qs[0], outs[1], opt)
	require.ErrorContains(t, err, "want q's")
	err = c.AttendInto(ctx, 0, qs[0], &dma.Result{O: qs[0], LSE: outs[0].LSE}, opt)
	require.ErrorContains(t, err, "out.O is q")
	err = c.AttendInto(ctx, 0, qs[0], nil, opt)
	require.ErrorContains(t, err, "nil result")
	err = c.AttendInto(ctx, 1, qs[0], outs[0], opt)
	require.ErrorContains(t, err, "sequence 1 of 1")
}

// TestKVCacheCarriedThresholds: one-row steps in mode row carry their thresholds to the
// next step (one key appended) instead of selecting over every key again; that must
// select exactly what a full select does. Each step attends carried (AttendInto or a
// batch's first step, just after one appended key) and then in full (Attend at the same
// length), bit-identical, over random weights, ties, equal weights (every new key joins
// the best w), a window change, a Reset followed by appends to the same length, and
// two-row steps in between.
func TestKVCacheCarriedThresholds(t *testing.T) {
	d := open(t)
	rng := seed(t)
	ctx := context.Background()
	const h, hkv, dim, n = 4, 2, 32, 240
	for _, kind := range []string{"random", "ties", "equal"} {
		t.Run(kind, func(t *testing.T) {
			s := newSeqData(rng, n, h, hkv, hkv, dim)
			for i := range s.w {
				switch kind {
				case "ties":
					s.w[i] = float32(rng.IntN(3))
				case "equal":
					s.w[i] = 0
				}
			}
			c, err := d.NewKVCache(dma.KVCacheConfig{Sequences: 2, Capacity: n, KVHeads: hkv, HeadDim: dim, DType: dma.Float32})
			require.NoError(t, err)
			defer c.Close()
			appendKeys := func(a, b int) {
				w, err := d.NewWeights(1, hkv, b-a)
				require.NoError(t, err)
				defer w.Close()
				require.NoError(t, w.Upload(ctx, s.weightCols(a, b)))
				kt := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: b - a, H: hkv, D: dim}, rows(s.k, hkv, dim, a, b))
				vt := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: b - a, H: hkv, D: dim}, rows(s.v, hkv, dim, a, b))
				require.NoError(t, c.Append(ctx, 1, kt, vt, w))
			}
			download := func(r *dma.Result) []uint32 {
				o, err := r.O.Download(ctx)
				require.NoError(t, err)
				lse, err := r.LSE.Download(ctx)
				require.NoError(t, err)
				return append(bits(o), bits(lse)...)
			}
			qStep, err := d.NewTensor(dma.Float32, dma.Shape{B: 1, L: 1, H: h, D: dim}, dma.BLHD)
			require.NoError(t, err)
			defer qStep.Close()
			out, err := c.NewResult(qStep)
			require.NoError(t, err)
			defer out.Close()
			appendKeys(0, 30)
			w := 16
			for pos := 30; pos < n; pos++ {
				appendKeys(pos, pos+1)
				switch pos {
				case 120:
					w = 9 // a new window: this step selects in full, the next ones carry again
				case 180:
					// Emptied and refilled to the same length: the carried state is stale.
					require.NoError(t, c.Reset(1))
					appendKeys(0, pos+1)
				}
				opt := dma.Options{Mode: dma.ModeRow, Window: w, Causal: true}
				q := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: 1, H: h, D: dim}, rows(s.q, h, dim, pos, pos+1))
				var carried []uint32
				if pos%7 == 0 {
					// A batch's first step carries; its second (same sequence) selects in full.
					rs, err := c.AttendBatch(ctx, []int{1, 1}, []*dma.Tensor{q, q}, opt)
					require.NoError(t, err)
					carried = download(rs[0])
					require.Equal(t, carried, download(rs[1]), "pos %d: the batch's two steps", pos)
					for _, r := range rs {
						r.Close()
					}
				} else {
					require.NoError(t, qStep.Upload(ctx, rows(s.q, h, dim, pos, pos+1)))
					require.NoError(t, c.AttendInto(ctx, 1, qStep, out, opt))
					carried = download(out)
				}
				res, err := c.Attend(ctx, 1, q, opt)
				require.NoError(t, err)
				require.Equal(t, carried, download(res), "pos %d (w %d): carried thresholds against a full select", pos, w)
				res.Close()
				if pos%11 == 0 {
					// A two-row step (a draft) between one-row steps changes nothing carried.
					q2 := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: 2, H: h, D: dim}, rows(s.q, h, dim, pos-1, pos+1))
					r2, err := c.Attend(ctx, 1, q2, opt)
					require.NoError(t, err)
					r2.Close()
				}
			}
		})
	}
}

// TestKVCacheAppendAttendInto: a step in one submission (AppendAttendInto) gives, bit
// for bit, what Append then Attend give on a twin cache, one token or two per step,
// with random and equal weights, recordings reused and evicted (two query tensors
// alternate); a step that fails leaves the sequence as it was.
func TestKVCacheAppendAttendInto(t *testing.T) {
	d := open(t)
	rng := seed(t)
	ctx := context.Background()
	const h, hkv, dim, n = 4, 2, 32, 160
	for _, c := range []struct {
		name   string
		tokens int
		equal  bool
		dt     dma.DType
	}{{"one", 1, false, dma.Float16}, {"one/equal", 1, true, dma.Float32}, {"two", 2, false, dma.BFloat16}} {
		t.Run(c.name, func(t *testing.T) {
			s := newSeqData(rng, n, h, hkv, hkv, dim)
			if c.equal {
				clear(s.w)
			}
			var caches [2]*dma.KVCache
			for i := range caches {
				var err error
				caches[i], err = d.NewKVCache(dma.KVCacheConfig{Sequences: 2, Capacity: n, KVHeads: hkv, HeadDim: dim, DType: c.dt})
				require.NoError(t, err)
				defer caches[i].Close()
			}
			chunk := func(a, b int) (*dma.Tensor, *dma.Tensor, *dma.Weights) {
				w, err := d.NewWeights(1, hkv, b-a)
				require.NoError(t, err)
				t.Cleanup(func() { w.Close() })
				require.NoError(t, w.Upload(ctx, s.weightCols(a, b)))
				return tensor(t, d, c.dt, dma.Shape{B: 1, L: b - a, H: hkv, D: dim}, rows(s.k, hkv, dim, a, b)),
					tensor(t, d, c.dt, dma.Shape{B: 1, L: b - a, H: hkv, D: dim}, rows(s.v, hkv, dim, a, b)), w
			}
			for _, cc := range caches {
				kt, vt, wt := chunk(0, 40)
				require.NoError(t, cc.Append(ctx, 0, kt, vt, wt))
			}
			// Step tensors reused across steps (their contents change), two sets alternating.
			var qs [2]*dma.Tensor
			var outs [2]*dma.Result
			var ks, vs [2]*dma.Tensor
			var ws [2]*dma.Weights
			for i := range 2 {
				var err error
				qs[i], err = d.NewTensor(c.dt, dma.Shape{B: 1, L: c.tokens, H: h, D: dim}, dma.BLHD)
				require.NoError(t, err)
				defer qs[i].Close()
				outs[i], err = caches[1].NewResult(qs[i])
				require.NoError(t, err)
				defer outs[i].Close()
				ks[i], err = d.NewTensor(c.dt, dma.Shape{B: 1, L: c.tokens, H: hkv, D: dim}, dma.BLHD)
				require.NoError(t, err)
				defer ks[i].Close()
				vs[i], err = d.NewTensor(c.dt, dma.Shape{B: 1, L: c.tokens, H: hkv, D: dim}, dma.BLHD)
				require.NoError(t, err)
				defer vs[i].Close()
				ws[i], err = d.NewWeights(1, hkv, c.tokens)
				require.NoError(t, err)
				defer ws[i].Close()
			}
			opt := dma.Options{Mode: dma.ModeRow, Window: 24, Causal: true}
			for pos, step := 40, 0; pos+c.tokens <= n; pos, step = pos+c.tokens, step+1 {
				kt, vt, wt := chunk(pos, pos+c.tokens)
				require.NoError(t, caches[0].Append(ctx, 0, kt, vt, wt))
				qd := rows(s.q, h, dim, pos, pos+c.tokens)
				want, err := caches[0].Attend(ctx, 0, tensor(t, d, c.dt, dma.Shape{B: 1, L: c.tokens, H: h, D: dim}, qd), opt)
				require.NoError(t, err)
				i := step % 2
				require.NoError(t, qs[i].Upload(ctx, qd))
				require.NoError(t, ks[i].Upload(ctx, rows(s.k, hkv, dim, pos, pos+c.tokens)))
				require.NoError(t, vs[i].Upload(ctx, rows(s.v, hkv, dim, pos, pos+c.tokens)))
				require.NoError(t, ws[i].Upload(ctx, s.weightCols(pos, pos+c.tokens)))
				_, err = caches[1].AppendAttendIntoProfiled(ctx, 0, ks[i], vs[i], ws[i], qs[i], outs[i], opt)
				require.NoError(t, err)
				require.Equal(t, pos+c.tokens, caches[1].Len(0))
				for _, x := range []struct {
					name      string
					got, want *dma.Tensor
				}{{"O", outs[i].O, want.O}} {
					g, err := x.got.Download(ctx)
					require.NoError(t, err)
					w, err := x.want.Download(ctx)
					require.NoError(t, err)
					require.Equal(t, bits(w), bits(g), "pos %d: %s", pos, x.name)
				}
				gl, err := outs[i].LSE.Download(ctx)
				require.NoError(t, err)
				wl, err := want.LSE.Download(ctx)
				require.NoError(t, err)
				require.Equal(t, bits(wl), bits(gl), "pos %d: LSE", pos)
				want.Close()
			}
			// Past the capacity: an error, and the length stays.
			before := caches[1].Len(0)
			require.ErrorContains(t, caches[1].AppendAttendInto(ctx, 0, ks[0], vs[0], ws[0], qs[0], outs[0], opt), "capacity")
			require.Equal(t, before, caches[1].Len(0))
			// A step the attention refuses (after the new keys were counted): nothing changes.
			explicit := dma.Options{Mode: dma.ModeExplicit, Window: 24, Causal: true}
			require.ErrorContains(t, caches[1].AppendAttendInto(ctx, 1, ks[0], vs[0], ws[0], qs[0], outs[0], explicit), "mode")
			require.Equal(t, 0, caches[1].Len(1))
		})
	}
}
