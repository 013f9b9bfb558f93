package nn_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/nn"
	"github.com/dmavk/dmavk/vk"
	"github.com/stretchr/testify/require"
)

var dtypes = []dma.DType{dma.Float32, dma.Float16, dma.BFloat16}

func open(t testing.TB) *nn.Device {
	t.Helper()
	in := vktest.Instance(t)
	pd, err := in.Choose()
	require.NoError(t, err)
	d, err := dma.OpenOn(in, pd, dma.Config{})
	require.NoError(t, err)
	n, err := nn.New(d)
	require.NoError(t, err)
	t.Cleanup(func() { n.Close(); d.Close() })
	return n
}

func seed(t testing.TB) *rand.Rand {
	s := rand.Uint64()
	t.Logf("seed %d", s)
	return rand.New(rand.NewPCG(s, 2))
}

func randv(rng *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(scale * (2*rng.Float64() - 1))
	}
	return v
}

// tensor uploads v (rounded to dt) as a [rows, cols] tensor.
func tensor(t testing.TB, n *nn.Device, dt dma.DType, rows, cols int, v []float32) *nn.Tensor {
	t.Helper()
	x, err := n.NewTensor(dt, rows, cols)
	require.NoError(t, err)
	t.Cleanup(func() { x.Close() })
	if v != nil {
		require.NoError(t, x.Upload(context.Background(), v))
	}
	return x
}

func run(t testing.TB, n *nn.Device, rec func(r *vk.Recorder) error) {
	t.Helper()
	require.NoError(t, n.Run(context.Background(), rec))
}

func download(t testing.TB, x *nn.Tensor) []float32 {
	t.Helper()
	v, err := x.Download(context.Background())
	require.NoError(t, err)
	return v
}

// near checks got against the float64 want within tol of max |want|.
func near(t testing.TB, want []float64, got []float32, tol float64, what string) {
	t.Helper()
	require.Equal(t, len(want), len(got), what)
	m, e := 0.0, 0.0
	for i := range want {
		m = max(m, math.Abs(want[i]))
		if math.IsNaN(float64(got[i])) {
			t.Fatalf("%s: NaN at %d", what, i)
		}
		e = max(e, math.Abs(want[i]-float64(got[i])))
	}
	require.LessOrEqualf(t, e, tol*max(m, 1e-30), "%s: max error %.3g of max %.3g (rel %.3g, tol %.3g)", what, e, m, e/m, tol)
}

// tolOf is the relative tolerance of results stored in dt (float32 arithmetic).
func tolOf(dt dma.DType) float64 {
	switch dt {
	case dma.Float16:
		return 2e-3
	case dma.BFloat16:
		return 1e-2
	}
	return 1e-5
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func TestLinear(t *testing.T) {
	n := open(t)
	rng := seed(t)
	ctx := context.Background()
	shapes := [][3]int{{1, 1, 1}, {1, 37, 53}, {3, 130, 257}, {4, 768, 256}, {5, 33, 70}, {67, 129, 100}, {130, 64, 48}}
	for _, wt := range dtypes {
		for _, xt := range dtypes {
			for _, s := range shapes {
				m, out, in := s[0], s[1], s[2]
				for _, c := range []struct{ withBias, half bool }{{false, false}, {true, false}, {false, true}} {
					withBias, half := c.withBias, c.half
					if withBias && (xt != dma.Float32 || m == 1) || half && wt != dma.Float16 {
						continue
					}
					t.Run(fmt.Sprintf("w%v/x%v/%dx%dx%d/bias=%v/half=%v", wt, xt, m, out, in, withBias, half), func(t *testing.T) {
						w := nn.Round(wt, randv(rng, out*in, 1))
						x := nn.Round(xt, randv(rng, m*in, 1))
						var bias *nn.Array
						var bv []float32
						if withBias {
							bv = randv(rng, out, 1)
							bias = nn.ArrayOf("bias", dma.Float32, bv, out)
						}
						l, err := n.NewLinear(ctx, nn.ArrayOf("w", wt, w, out, in), bias)
						require.NoError(t, err)
						defer l.Close()
						l.HalfInputs = half
						if half && os.Getenv("DMAVK_REQUIRE_COOPMAT") == "1" {
							require.True(t, l.TensorCores(), "no tensor-core product on this device")
						}
						// x and y are views 16 rows into larger tensors.
						xbig := tensor(t, n, xt, m+16, in, append(make([]float32, 16*in), x...))
						ybig := tensor(t, n, dma.Float32, m+16, out, nil)
						xs, err := xbig.Slice(16, 16+m)
						require.NoError(t, err)
						y, err := ybig.Slice(16, 16+m)
						require.NoError(t, err)
						var scratch *nn.Tensor
						if e := l.ScratchElems(m); e > 0 {
							scratch = tensor(t, n, dma.Float32, 1, e, nil)
						}
						run(t, n, func(r *vk.Recorder) error { return l.Record(r, y, xs, scratch) })
						want := make([]float64, m*out)
						for i := 0; i < m; i++ {
							for o := 0; o < out; o++ {
								s := 0.0
								for k := 0; k < in; k++ {
									s += float64(x[i*in+k]) * float64(w[o*in+k])
								}
								if withBias {
									s += float64(bv[o])
								}
								want[i*out+o] = s
							}
						}
						tol := 1e-5 * math.Sqrt(float64(in))
						if half && m > 4 && xt != dma.Float16 {
							tol = tolOf(dma.Float16) // the tensor-core path rounds x to fp16
						}
						near(t, want, download(t, y), tol, "y")
					})
				}
			}
		}
	}
}

// TestLinearScratchUpTo: scratch of ScratchElems(m) serves every row count up to m (a
// prompt's last chunk may have 4 rows or fewer: the split-K product, whose scratch a
// larger product may not need).
func TestLinearScratchUpTo(t *testing.T) {
	n := open(t)
	rng := seed(t)
	ctx := context.Background()
	const out, in, most = 70, 96, 40
	for _, half := range []bool{false, true} {
		l, err := n.NewLinear(ctx, nn.ArrayOf("w", dma.Float16, nn.Round(dma.Float16, randv(rng, out*in, 1)), out, in), nil)
		require.NoError(t, err)
		defer l.Close()
		l.HalfInputs = half
		scratch := tensor(t, n, dma.Float32, 1, max(1, l.ScratchElems(most)), nil)
		for _, m := range []int{1, 3, 4, 5, 17, most} {
			x := tensor(t, n, dma.Float32, m, in, randv(rng, m*in, 1))
			y := tensor(t, n, dma.Float32, m, out, nil)
			run(t, n, func(r *vk.Recorder) error { return l.Record(r, y, x, scratch) })
		}
	}
}

func TestRMSNormAndResidual(t *testing.T) {
	n := open(t)
	rng := seed(t)
	ctx := context.Background()
	for _, wt := range dtypes {
		for _, s := range [][2]int{{1, 1}, {3, 7}, {5, 300}, {2, 768}} {
			rows, cols := s[0], s[1]
			t.Run(fmt.Sprintf("%v/%dx%d", wt, rows, cols), func(t *testing.T) {
				x := randv(rng, rows*cols, 3)
				w := nn.Round(wt, randv(rng, cols, 2))
				g := nn.Round(wt, randv(rng, cols, 2))
				res := randv(rng, rows*cols, 1)
				wv, err := n.NewVector(ctx, nn.ArrayOf("w", wt, w, cols))
				require.NoError(t, err)
				defer wv.Close()
				gv, err := n.NewVector(ctx, nn.ArrayOf("g", wt, g, cols))
				require.NoError(t, err)
				defer gv.Close()
				xs := tensor(t, n, dma.Float32, rows, cols, x)
				y := tensor(t, n, dma.Float32, rows, cols, nil)
				rs := tensor(t, n, dma.Float32, rows, cols, res)
				const eps = 1e-6
				run(t, n, func(r *vk.Recorder) error { return n.RecordRMSNorm(r, y, xs, wv, eps) })
				want := make([]float64, rows*cols)
				for i := 0; i < rows; i++ {
					ss := 0.0
					for c := 0; c < cols; c++ {
						ss += float64(x[i*cols+c]) * float64(x[i*cols+c])
					}
					inv := 1 / math.Sqrt(ss/float64(cols)+eps)
					for c := 0; c < cols; c++ {
						want[i*cols+c] = float64(w[c]) * float64(x[i*cols+c]) * inv
					}
				}
				near(t, want, download(t, y), 1e-5, "rmsnorm")
				// y = g * residual + y, in place.
				run(t, n, func(r *vk.Recorder) error { return n.RecordResidual(r, rs, y, rs, gv) })
				for i := range want {
					want[i] += float64(g[i%cols]) * float64(res[i])
				}
				got := download(t, rs)
				near(t, want, got, 1e-5, "residual")
				// The fused residual + norm gives the bits of the two passes.
				xf := tensor(t, n, dma.Float32, rows, cols, res)
				normed := tensor(t, n, dma.Float32, rows, cols, nil)
				run(t, n, func(r *vk.Recorder) error { return n.RecordResidualNorm(r, xf, y, gv, normed, wv, eps) })
				require.Equal(t, got, download(t, xf), "fused residual")
				sep := tensor(t, n, dma.Float32, rows, cols, nil)
				run(t, n, func(r *vk.Recorder) error { return n.RecordRMSNorm(r, sep, rs, wv, eps) })
				require.Equal(t, download(t, sep), download(t, normed), "fused norm")
			})
		}
	}
}

func TestNormRoPE(t *testing.T) {
	n := open(t)
	rng := seed(t)
	for _, ot := range dtypes {
		for _, c := range []struct{ rows, heads, d int }{{1, 1, 2}, {3, 2, 8}, {7, 3, 64}, {2, 4, 128}, {1, 1, 256}} {
			for _, norm := range []bool{true, false} {
				t.Run(fmt.Sprintf("%v/%dx%dx%d/norm=%v", ot, c.rows, c.heads, c.d, norm), func(t *testing.T) {
					rope := &nn.RoPE{Theta: 10000, HeadDim: c.d}
					require.NoError(t, rope.Check())
					for f, x := range rope.InvFreqFor(5001) {
						require.InEpsilon(t, math.Pow(10000, -float64(2*f)/float64(c.d)), float64(x), 1e-6)
					}
					pos := make([]int, c.rows)
					for i := range pos {
						pos[i] = rng.IntN(5000)
					}
					cs := rope.Table(pos, 5000)
					x := randv(rng, c.rows*c.heads*c.d, 2)
					w := nn.Round(dma.BFloat16, randv(rng, c.d, 2))
					var wv *nn.Vector
					if norm {
						var err error
						wv, err = n.NewVector(context.Background(), nn.ArrayOf("w", dma.BFloat16, w, c.d))
						require.NoError(t, err)
						defer wv.Close()
					}
					xs := tensor(t, n, dma.Float32, c.rows, c.heads*c.d, x)
					ct := tensor(t, n, dma.Float32, c.rows, c.d, cs)
					out := tensor(t, n, ot, c.rows, c.heads*c.d, nil)
					const eps = 1e-6
					run(t, n, func(r *vk.Recorder) error { return n.RecordNormRoPE(r, out, xs, c.heads, c.d, wv, eps, ct) })
					want := make([]float64, len(x))
					half := c.d / 2
					for i := 0; i < c.rows; i++ {
						for h := 0; h < c.heads; h++ {
							base := (i*c.heads + h) * c.d
							a := make([]float64, c.d)
							ss := 0.0
							for k := range a {
								a[k] = float64(x[base+k])
								ss += a[k] * a[k]
							}
							if norm {
								inv := 1 / math.Sqrt(ss/float64(c.d)+eps)
								for k := range a {
									a[k] *= inv * float64(w[k])
								}
							}
							for k := 0; k < c.d; k++ {
								// The angle as transformers computes it: float32 inv_freq
								// times the float32 position, rounded to float32.
								f := k % half
								ang := float64(float32(rope.InvFreq()[f]) * float32(pos[i]))
								rot := a[k-half+2*half*boolInt(k < half)]
								if k < half {
									rot = -a[k+half]
								}
								want[base+k] = a[k]*math.Cos(ang) + rot*math.Sin(ang)
							}
						}
					}
					near(t, want, download(t, out), tolOf(ot), "rope")
				})
			}
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestEmbeddingSiLUCastWeights(t *testing.T) {
	n := open(t)
	rng := seed(t)
	ctx := context.Background()
	for _, dt := range dtypes {
		t.Run(dt.String(), func(t *testing.T) {
			const vocab, dim, rows = 37, 33, 5
			tab := nn.Round(dt, randv(rng, vocab*dim, 1))
			e, err := n.NewEmbedding(ctx, nn.ArrayOf("emb", dt, tab, vocab, dim))
			require.NoError(t, err)
			defer e.Close()
			ids := make([]int, rows)
			for i := range ids {
				ids[i] = rng.IntN(vocab)
			}
			idt, err := n.NewIDs(rows)
			require.NoError(t, err)
			defer idt.Close()
			require.NoError(t, idt.UploadIDs(ctx, ids))
			y := tensor(t, n, dma.Float32, rows, dim, nil)
			run(t, n, func(r *vk.Recorder) error { return e.Record(n, r, y, idt) })
			want := make([]float64, rows*dim)
			for i, id := range ids {
				for c := 0; c < dim; c++ {
					want[i*dim+c] = float64(tab[id*dim+c])
				}
			}
			near(t, want, download(t, y), 0, "embedding")

			g, u := randv(rng, rows*dim, 8), randv(rng, rows*dim, 2)
			gs, us := tensor(t, n, dma.Float32, rows, dim, g), tensor(t, n, dma.Float32, rows, dim, u)
			run(t, n, func(r *vk.Recorder) error { return n.RecordSiLUMul(r, y, gs, us) })
			for i := range want {
				x := float64(g[i])
				want[i] = x / (1 + math.Exp(-x)) * float64(u[i])
			}
			near(t, want, download(t, y), 1e-5, "silu_mul")

			const cr, cc = 3, 6 // an even count: 16-bit outputs are whole words
			x := randv(rng, cr*cc, 100)
			xs := tensor(t, n, dma.Float32, cr, cc, x)
			out := tensor(t, n, dt, cr, cc, nil)
			run(t, n, func(r *vk.Recorder) error { return n.RecordCast(r, out, xs) })
			require.Equal(t, nn.Round(dt, x), download(t, out), "cast rounds to nearest even")
		})
	}
	t.Run("dynamic weights", func(t *testing.T) {
		d := n.DMA()
		const rows, hb, lk, off = 5, 3, 9, 2
		dt := randv(rng, (rows+1)*hb, 6)
		a := randv(rng, hb, 2)
		dts := tensor(t, n, dma.Float32, rows+1, hb, dt)
		as := tensor(t, n, dma.Float32, 1, hb, a)
		w, err := d.NewWeights(1, hb, lk)
		require.NoError(t, err)
		defer w.Close()
		require.NoError(t, w.Upload(ctx, make([]float32, hb*lk)))
		run(t, n, func(r *vk.Recorder) error {
			s, err := dts.Slice(0, rows)
			if err != nil {
				return err
			}
			return n.RecordDynamicWeights(r, w, off, s, as)
		})
		got, err := w.Download(ctx)
		require.NoError(t, err)
		want := make([]float64, hb*lk)
		for i := 0; i < rows; i++ {
			for h := 0; h < hb; h++ {
				x := float64(dt[i*hb+h])
				sp := math.Log1p(math.Exp(x))
				want[h*lk+off+i] = math.Exp(float64(a[h]) * sp)
			}
		}
		near(t, want, got, 1e-5, "weights")
	})
}

// TestRecordLinears: products recorded side by side (shared barriers, one scratch
// carved among them) give the bits of each recorded alone.
func TestRecordLinears(t *testing.T) {
	n := open(t)
	rng := seed(t)
	ctx := context.Background()
	for _, m := range []int{1, 3, 70} {
		t.Run(fmt.Sprint(m), func(t *testing.T) {
			const in = 96
			x := tensor(t, n, dma.Float32, m, in, randv(rng, m*in, 1))
			var jobs []nn.LinearJob
			var ls []*nn.Linear
			for i, out := range []int{40, 200, 7} {
				dt := dtypes[i]
				l, err := n.NewLinear(ctx, nn.ArrayOf("w", dt, randv(rng, out*in, 1), out, in), nil)
				require.NoError(t, err)
				defer l.Close()
				ls = append(ls, l)
				jobs = append(jobs, nn.LinearJob{L: l, Y: tensor(t, n, dma.Float32, m, out, nil), X: x})
			}
			scratch := tensor(t, n, dma.Float32, 1, max(1, nn.LinearsScratchElems(m, ls...)), nil)
			run(t, n, func(r *vk.Recorder) error { return nn.RecordLinears(r, scratch, jobs...) })
			for _, j := range jobs {
				y := tensor(t, n, dma.Float32, m, j.L.Out, nil)
				run(t, n, func(r *vk.Recorder) error { return j.L.Record(r, y, x, scratch) })
				require.Equal(t, download(t, y), download(t, j.Y))
			}
			small := tensor(t, n, dma.Float32, 1, 1, nil)
			if nn.LinearsScratchElems(m, ls...) > 1 {
				err := n.Run(ctx, func(r *vk.Recorder) error { return nn.RecordLinears(r, small, jobs...) })
				require.ErrorContains(t, err, "scratch")
			}
		})
	}
}

// TestManyWorkgroups: element-wise passes over more elements than 65535 workgroups of
// one dimension cover (long prompts) reach every element. Skipped with -short.
func TestManyWorkgroups(t *testing.T) {
	if testing.Short() {
		t.Skip("large buffers skipped with -short")
	}
	n := open(t)
	const rows, cols = 8192, 4096 // 2 * 256 * 65535 < rows * cols, and 128 MiB fits lavapipe's binding range
	x := make([]float32, rows*cols)
	for i := range x {
		x[i] = float32(i % 1000003)
	}
	xs := tensor(t, n, dma.Float32, rows, cols, x)
	y := tensor(t, n, dma.Float32, rows, cols, nil)
	run(t, n, func(r *vk.Recorder) error { return n.RecordCast(r, y, xs) })
	got := download(t, y)
	for i := range x {
		if got[i] != x[i] {
			t.Fatalf("element %d: %v, want %v", i, got[i], x[i])
		}
	}
}
