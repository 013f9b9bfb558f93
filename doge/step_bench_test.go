package doge_test

import (
	"context"
	"os"
	"testing"

	"github.com/dmavk/dmavk/doge"
	"github.com/stretchr/testify/require"
)

// BenchmarkStep: decode steps of one sequence of the tiny fixture; host-us/op is the
// host's own work per step (State.LastStep's Host: checks, parameters, inputs, the
// logits' readback), gpu-us/op the step's GPU time. DMAVK_BENCH_MODEL=DIR takes that
// model instead (e.g. from dmavk generate --random 160m --save DIR).
func BenchmarkStep(b *testing.B) {
	n := openNN(b)
	ctx := context.Background()
	var m *doge.Model
	ids := make([]int, 100)
	if dir := os.Getenv("DMAVK_BENCH_MODEL"); dir != "" {
		var err error
		m, err = doge.Load(ctx, n, dir, doge.Options{})
		require.NoError(b, err)
		defer m.Close()
		for i := range ids {
			ids[i] = (i * 7919) % m.Cfg.VocabSize
		}
	} else {
		var ref fixture
		m, ref = loadFixture(b, n, "tiny", doge.Options{})
		ids = ref.ints(b, "prompt_ids")
	}
	st, err := m.NewState(1, len(ids)+b.N+8)
	require.NoError(b, err)
	defer st.Close()
	_, err = st.Prefill(ctx, 0, ids[:16])
	require.NoError(b, err)
	for i := 0; i < 3; i++ { // past the recordings
		_, err = st.Step(ctx, []int{0}, []int{ids[i]})
		require.NoError(b, err)
	}
	var host, gpu float64
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, err := st.Step(ctx, []int{0}, []int{ids[i%len(ids)]})
		require.NoError(b, err)
		lt := st.LastStep()
		host += float64(lt.Host.Microseconds())
		gpu += float64(lt.GPU.Microseconds())
	}
	b.ReportMetric(host/float64(b.N), "host-us/op")
	b.ReportMetric(gpu/float64(b.N), "gpu-us/op")
}
